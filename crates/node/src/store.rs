//! The node's site-local store of raw telemetry (`[store]`): every reading the detection stage
//! takes in is also kept in encrypted Parquet segments (see `tessera-store`), expired per grade
//! and crypto-shredded, and served as the SQL `telemetry` table together with the rows not yet
//! in a segment.
//!
//! A thread of its own ([`TelemetryStore`]) takes the batches: it cuts a segment when
//! `segment_rows` rows are pending or the oldest has waited `segment_interval` (or at once
//! when a mark asks for it), and applies the retention every `retention_check`. Each shred is
//! written to the `tessera::audit` log. The channel to it is bounded, so a slow disk holds up
//! the detection stage instead of piling up rows. Rows pending at a crash are not in a
//! segment, and nothing past them is checkpointed or committed yet (see [`crate::durability`]):
//! Kafka still has them and they are read again. A clean stop writes them. A failed write
//! stops the store (and the stage) with the rows kept pending, never dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use tessera_core::{ConfigError, ensure, now_ms};
use tessera_core::{DataGrade, LiveGrades, telemetry_schema};
use tessera_store::{Kek, KekSealer, Retention, SegmentMeta, SegmentStore, ShredEvent, StoreError};

use crate::durability::{CloseOnDrop, Durability, StoreInput, StoreLink};
use crate::error::NodeError;
use crate::lifecycle::StageLoop;

type Result<T, E = NodeError> = std::result::Result<T, E>;

/// The `[store]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the segments, their manifest and the sealed key ring live (site-local disk);
    /// unset: no store (the `telemetry` table then holds only the newest readings in memory).
    pub dir: Option<PathBuf>,
    /// The site's key-encryption key file (`v<version>:<64 hex digits>`, made by `tessera
    /// store new-kek`): mount it from a secret, not from the data disk.
    pub kek_file: Option<PathBuf>,
    /// A segment is cut when this many rows are pending...
    pub segment_rows: usize,
    /// ...or when the oldest pending row has waited this long.
    #[serde(with = "humantime_serde")]
    pub segment_interval: Duration,
    /// How long each grade is kept, by event time.
    pub retention: RetentionConfig,
    /// How often the retention is applied.
    #[serde(with = "humantime_serde")]
    pub retention_check: Duration,
}

/// `[store.retention]`: per grade, how long rows are kept (`general` also bounds the files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// `general` columns and the segment files.
    #[serde(with = "humantime_serde")]
    pub general: Option<Duration>,
    /// `important` columns.
    #[serde(with = "humantime_serde")]
    pub important: Option<Duration>,
    /// `core` columns.
    #[serde(with = "humantime_serde")]
    pub core: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        Self { general: days(365), important: days(90), core: days(30) }
    }
}

impl RetentionConfig {
    fn retention(&self) -> Retention {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as i64);
        Retention { general_ms: ms(self.general), important_ms: ms(self.important), core_ms: ms(self.core) }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dir: None,
            kek_file: None,
            segment_rows: 500_000,
            segment_interval: Duration::from_secs(60),
            retention: RetentionConfig::default(),
            retention_check: Duration::from_secs(60),
        }
    }
}

impl StoreConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // (A KEK without a store still seals the checkpoints.)
        ensure(
            self.dir.is_none() || self.kek_file.is_some(),
            "kek_file",
            "a store needs the site's key-encryption key (make one with `tessera store new-kek`)",
        )?;
        ensure(self.segment_rows > 0, "segment_rows", "must be positive")?;
        ensure(!self.segment_interval.is_zero(), "segment_interval", "must be longer than 0")?;
        ensure(!self.retention_check.is_zero(), "retention_check", "must be longer than 0")?;
        self.retention.retention().check()
    }

    /// With a KEK configured, the sealer of the site's checkpoints (they hold raw readings of
    /// open windows): sealed under a key derived from the KEK, so no reading is on disk in the
    /// clear.
    pub fn checkpoint_sealer(&self) -> Result<Option<Arc<dyn tessera_state::Sealer>>> {
        let Some(kek_file) = &self.kek_file else { return Ok(None) };
        let kek = Kek::read(kek_file).map_err(store("store.kek_file"))?;
        Ok(Some(Arc::new(CheckpointSealer(KekSealer::new(&kek)))))
    }

    /// Opens the configured store (its directory and KEK).
    pub fn open(&self) -> Result<Option<SegmentStore>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let kek_file = self
            .kek_file
            .as_deref()
            .ok_or_else(|| ConfigError::new("store.kek_file", "a store needs the site's key-encryption key"))?;
        let kek = Kek::read(kek_file).map_err(store("store.kek_file"))?;
        let opened = SegmentStore::open(dir, kek).map_err(store(&format!("opening the store in {}", dir.display())))?;
        Ok(Some(opened))
    }
}

/// The store's [`KekSealer`] as the checkpoint store's [`tessera_state::Sealer`].
#[derive(Debug)]
struct CheckpointSealer(KekSealer);

impl tessera_state::Sealer for CheckpointSealer {
    fn seal(&self, plain: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0.seal(plain)
    }
    fn open(&self, sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0.open(sealed)
    }
}

/// Counters of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Segments written by this process.
    pub segments_written: u64,
    /// Rows in them.
    pub rows_written: u64,
    /// Data keys destroyed (by retention or on request).
    pub keys_shredded: u64,
}

struct Shared {
    store: Mutex<SegmentStore>,
    /// Rows taken in but not yet in a segment.
    pending: Mutex<Vec<RecordBatch>>,
    stats: Mutex<StoreStats>,
}

/// The store's handles: where rows go, its tables, its counters and its stop request (its
/// writer loop runs on a thread the node started, see [`TelemetryStore::prepare`]).
pub struct TelemetryStore {
    link: Option<StoreLink>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl TelemetryStore {
    /// Prepares the store's writer over `store` (columns graded by `grades`): the handle, and
    /// the loop for the caller to run on a thread, which writes segments until the store is
    /// asked to stop and then writes what is pending.
    /// With `cut_at_marks` (a checkpointed stage), a segment holds only rows before the newest
    /// mark: every stored row is then covered by the checkpoints that mark is for, and a crash
    /// reads again only what no segment holds.
    pub fn prepare(
        store: SegmentStore,
        config: &StoreConfig,
        grades: LiveGrades,
        cut_at_marks: bool,
    ) -> (Self, StageLoop<()>) {
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            pending: Mutex::new(Vec::new()),
            stats: Mutex::new(StoreStats::default()),
        });
        let (input, queue) = std::sync::mpsc::sync_channel(16);
        let durability = Arc::new(Durability::default());
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Writer {
            shared: shared.clone(),
            config: config.clone(),
            grades,
            stop: stop.clone(),
            durability: durability.clone(),
            cut_at_marks,
        };
        let link = StoreLink { input, durability };
        (Self { link: Some(link), shared, stop }, StageLoop::new("store", move || worker.run(queue)))
    }

    /// Where the detection stage sends the readings it takes in and its marks.
    pub fn link(&self) -> StoreLink {
        self.link.clone().expect("running")
    }

    /// The SQL `telemetry` table over the segments and the pending rows.
    pub fn table(&self) -> Arc<StoredTelemetry> {
        Arc::new(StoredTelemetry { shared: self.shared.clone() })
    }

    /// The SQL `segments` table: every segment, its time range and each grade's key state.
    pub fn segments_table(&self) -> Arc<tessera_sql::SnapshotTable> {
        let shared = self.shared.clone();
        let schema = segments_schema();
        tessera_sql::SnapshotTable::new(schema.clone(), move || {
            let segments = shared.store.lock().map(|s| s.segments().to_vec()).unwrap_or_default();
            segments_batch(&schema, &segments).map(|b| vec![b]).unwrap_or_default()
        })
    }

    /// The counters.
    pub fn stats(&self) -> StoreStats {
        self.shared.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Shreds the `grades` of the segments wholly inside `[from_ms, to_ms]` now (audited).
    pub fn shred(
        &self,
        from_ms: i64,
        to_ms: i64,
        grades: &[DataGrade],
        reason: &str,
        actor: &str,
    ) -> Result<Vec<ShredEvent>> {
        let events = self
            .shared
            .store
            .lock()
            .map_err(|_| NodeError::Poisoned("store"))?
            .shred(from_ms, to_ms, grades, reason, now_ms())
            .map_err(store("shredding"))?;
        audit_shreds(&self.shared, &events, actor);
        Ok(events)
    }

    /// Asks the writer to write what is pending and stop (once the detection stage, which
    /// sends it rows, has stopped).
    pub fn request_stop(&mut self) {
        self.link = None;
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for TelemetryStore {
    fn drop(&mut self) {
        self.request_stop();
    }
}

struct Writer {
    shared: Arc<Shared>,
    config: StoreConfig,
    /// Read at each segment written: a grade the cluster raised applies from the next segment.
    grades: LiveGrades,
    stop: Arc<AtomicBool>,
    durability: Arc<Durability>,
    cut_at_marks: bool,
}

/// What the writer holds until its next cut: the marks and acknowledgements that wait for the
/// pending rows to be in a segment.
#[derive(Default)]
struct Waiting {
    rows: usize,
    oldest: Option<Instant>,
    /// The newest mark, and how many pending batches and rows came before it.
    mark: Option<(u64, usize, usize)>,
    acks: Vec<tessera_ingest::BatchAck>,
    cut_now: bool,
}

impl Writer {
    fn run(self, queue: Receiver<StoreInput>) -> Result<()> {
        let _closes = CloseOnDrop(self.durability.clone());
        let retention = self.config.retention.retention();
        let mut waiting = Waiting::default();
        let mut last_retention = Instant::now() - self.config.retention_check;
        loop {
            let ended = match queue.recv_timeout(Duration::from_millis(200)) {
                Ok(StoreInput::Rows(batch)) => {
                    waiting.rows += batch.num_rows();
                    waiting.oldest.get_or_insert_with(Instant::now);
                    self.shared.pending.lock().map_err(|_| NodeError::Poisoned("pending rows"))?.push(batch);
                    false
                }
                Ok(StoreInput::Mark { epoch, .. }) if waiting.rows == 0 => {
                    self.durability.durable_through(epoch);
                    false
                }
                Ok(StoreInput::Mark { epoch, now }) => {
                    let batches = self.shared.pending.lock().map_err(|_| NodeError::Poisoned("pending rows"))?.len();
                    waiting.mark = Some((epoch, batches, waiting.rows));
                    waiting.cut_now |= now;
                    false
                }
                Ok(StoreInput::Acks(acks)) => {
                    waiting.acks.extend(acks);
                    false
                }
                Err(RecvTimeoutError::Timeout) => self.stop.load(Ordering::Relaxed),
                Err(RecvTimeoutError::Disconnected) => true,
            };
            let due = waiting.rows >= self.config.segment_rows
                || waiting.oldest.is_some_and(|t| t.elapsed() >= self.config.segment_interval);
            if (due || ended || waiting.cut_now) && waiting.rows > 0 {
                match (self.cut_at_marks && !ended, waiting.mark.take()) {
                    // Only what the newest mark covers; the rest waits for the next one.
                    (true, Some((epoch, batches, rows))) => {
                        if rows > 0 {
                            self.cut_segment(batches)?;
                        }
                        waiting.rows -= rows;
                        waiting.oldest = (waiting.rows > 0).then(Instant::now);
                        self.durability.durable_through(epoch);
                    }
                    (true, None) => {}
                    (false, mark) => {
                        self.cut_segment(usize::MAX)?;
                        waiting.rows = 0;
                        waiting.oldest = None;
                        if let Some((epoch, ..)) = mark {
                            self.durability.durable_through(epoch);
                        }
                    }
                }
                waiting.cut_now = false;
            }
            if waiting.rows == 0 {
                // Nothing pending: every mark and acknowledgement so far is covered.
                if let Some((epoch, ..)) = waiting.mark.take() {
                    self.durability.durable_through(epoch);
                }
                waiting.acks.drain(..).for_each(tessera_ingest::BatchAck::ack);
                waiting.cut_now = false;
            }
            if last_retention.elapsed() >= self.config.retention_check {
                last_retention = Instant::now();
                let events = self
                    .shared
                    .store
                    .lock()
                    .map_err(|_| NodeError::Poisoned("store"))?
                    .apply_retention(&retention, now_ms())
                    .map_err(store("applying the retention"))?;
                audit_shreds(&self.shared, &events, "retention");
            }
            if ended {
                return Ok(());
            }
        }
    }

    /// Writes the oldest `batches` pending batches (all, if fewer) as one segment; readers
    /// see them either pending or stored.
    fn cut_segment(&self, batches: usize) -> Result<()> {
        let mut segments = self.shared.store.lock().map_err(|_| NodeError::Poisoned("store"))?;
        let mut pending = self.shared.pending.lock().map_err(|_| NodeError::Poisoned("pending rows"))?;
        let at = batches.min(pending.len());
        let rest = pending.split_off(at);
        let batches = std::mem::replace(&mut *pending, rest);
        drop(pending);
        let written = segments.write("telemetry", &batches, &self.grades.current(), now_ms());
        match written {
            Ok(Some(meta)) => {
                tracing::debug!(segment = %meta.id, rows = meta.rows, bytes = meta.bytes, "segment written");
                if let Ok(mut s) = self.shared.stats.lock() {
                    s.segments_written += 1;
                    s.rows_written += meta.rows;
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                // Keep the rows readable (and for the next try) rather than lose them.
                if let Ok(mut pending) = self.shared.pending.lock() {
                    let newer = std::mem::take(&mut *pending);
                    *pending = batches.into_iter().chain(newer).collect();
                }
                Err(store("writing a telemetry segment")(e))
            }
        }
    }
}

fn audit_shreds(shared: &Shared, events: &[ShredEvent], actor: &str) {
    for e in events {
        tracing::info!(target: "tessera::audit", actor, action = "shred", segment = %e.segment, grade = %e.grade, key = %e.key_id,
            from_ms = e.min_ts_ms, to_ms = e.max_ts_ms, reason = %e.reason, file_deleted = e.file_deleted, "data key destroyed");
    }
    if let Ok(mut s) = shared.stats.lock() {
        s.keys_shredded += events.len() as u64;
    }
}

/// The `telemetry` table over the store: the segments whose time range can match the query's
/// `ts` filters, then the pending rows. A query needing a shredded column of a segment it
/// cannot rule out by time fails, naming the segment and why (the data is gone).
#[derive(Debug)]
pub struct StoredTelemetry {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

#[async_trait]
impl TableProvider for StoredTelemetry {
    fn schema(&self) -> SchemaRef {
        telemetry_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // Filters on `ts` prune segments; DataFusion still applies every filter to the rows.
        Ok(filters
            .iter()
            .map(|f| {
                if ts_bounds(f).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let full = telemetry_schema();
        let indices: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..full.fields().len()).collect());
        let schema = Arc::new(full.project(&indices)?);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let (mut lo, mut hi) = (i64::MIN, i64::MAX);
        for f in filters {
            if let Some((l, h)) = ts_bounds(f) {
                lo = lo.max(l);
                hi = hi.min(h);
            }
        }
        // Under the store's lock only the segment list is read and each segment's file and keys
        // opened; decoding happens after, so a scan never holds up the store's writer.
        let shredded = |e: tessera_store::StoreError| match e {
            tessera_store::StoreError::Shredded { .. } => {
                let hint = "filter on ts to leave the range out, or leave its columns out";
                datafusion::error::DataFusionError::External(Box::new(tessera_sql::SqlError::Destroyed(format!(
                    "telemetry: {e}; {hint}"
                ))))
            }
            other => datafusion::error::DataFusionError::Execution(format!("telemetry: {other}")),
        };
        let (opened, pending) = {
            let store = self
                .shared
                .store
                .lock()
                .map_err(|_| datafusion::error::DataFusionError::Execution("store lock poisoned".into()))?;
            let opened = store
                .segments()
                .iter()
                .filter(|s| s.max_ts_ms >= lo && s.min_ts_ms <= hi && s.stream == "telemetry")
                .map(|segment| store.open_segment(&segment.id, Some(&names)).map_err(shredded))
                .collect::<Result<Vec<_>, _>>()?;
            let pending = self
                .shared
                .pending
                .lock()
                .map_err(|_| datafusion::error::DataFusionError::Execution("pending lock poisoned".into()))?
                .clone();
            (opened, pending)
        };
        let mut batches = Vec::new();
        for segment in opened {
            for b in segment.batches().map_err(shredded)? {
                batches.push(RecordBatch::try_new(schema.clone(), b.columns().to_vec())?);
            }
        }
        for b in &pending {
            batches.push(b.project(&indices)?);
        }
        Ok(MemorySourceConfig::try_new_exec(&[batches], schema, None)?)
    }
}

/// The `[lo, hi]` event-time bounds (ms) a filter on `ts` puts on the rows, if it is one.
fn ts_bounds(filter: &Expr) -> Option<(i64, i64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else { return None };
    let (column, value, op) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), v) => (c, v, *op),
        (v, Expr::Column(c)) => (c, v, op.swap()?),
        _ => return None,
    };
    if column.name != "ts" {
        return None;
    }
    let ms = match value {
        Expr::Literal(v, _) => literal_ms(v)?,
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => literal_ms(v)?,
            _ => return None,
        },
        _ => return None,
    };
    match op {
        Operator::Gt | Operator::GtEq => Some((ms, i64::MAX)),
        Operator::Lt | Operator::LtEq => Some((i64::MIN, ms)),
        Operator::Eq => Some((ms, ms)),
        _ => None,
    }
}

fn literal_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampMillisecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(v.div_euclid(1_000)),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000_000)),
        _ => None,
    }
}

/// The schema of the segment listing (`tessera store list`): id, time range, rows, and each
/// grade's key state.
pub fn segments_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("segment", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("min_ts", ts(), false),
        Field::new("max_ts", ts(), false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("imported_from", DataType::Utf8, true),
    ];
    fields.extend(DataGrade::ALL.iter().map(|g| Field::new(format!("{g}_key"), DataType::Utf8, true)));
    Arc::new(Schema::new(fields))
}

/// One row per segment; each grade's column says `live`, `shredded at … (reason)` or null
/// (no columns of that grade).
pub fn segments_batch(schema: &SchemaRef, segments: &[SegmentMeta]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(segments.iter().map(|s| s.id.as_str()))),
        Arc::new(StringArray::from_iter_values(segments.iter().map(|s| s.stream.as_str()))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(segments.iter().map(|s| s.min_ts_ms)).with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(segments.iter().map(|s| s.max_ts_ms)).with_timezone("UTC"),
        ),
        Arc::new(UInt64Array::from_iter_values(segments.iter().map(|s| s.rows))),
        Arc::new(UInt64Array::from_iter_values(segments.iter().map(|s| s.bytes))),
        Arc::new(StringArray::from_iter(segments.iter().map(|s| s.imported_from.clone()))),
    ];
    for grade in DataGrade::ALL {
        columns.push(Arc::new(StringArray::from_iter(segments.iter().map(|s| {
            s.grades.get(grade).map(|k| match &k.shredded {
                None => "live".to_string(),
                Some(shred) => format!("shredded at {} ms ({})", shred.at_ms, shred.reason),
            })
        }))));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Writes a new key-encryption key file (refuses to overwrite one).
pub fn new_kek(path: &Path, version: u32) -> Result<()> {
    if path.exists() {
        return Err(NodeError::KekExists(path.to_path_buf()));
    }
    Kek::generate(version).and_then(|kek| kek.write(path)).map_err(store("writing a new KEK"))
}

/// A store failure while `what`.
fn store(what: &str) -> impl FnOnce(StoreError) -> NodeError {
    let what = what.to_string();
    move |source| NodeError::Store { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::Reached;
    use tessera_core::{GradeMap, MotorId, Reading, SiteId};

    fn rows(first_seq: u64, n: u64) -> RecordBatch {
        let mut builder = tessera_ingest::ShardBuilder::with_capacity(n as usize);
        for seq in first_seq..first_seq + n {
            builder.append(&Reading {
                motor_id: MotorId::new("M1").unwrap(),
                site_id: SiteId::new("s").unwrap(),
                event_time_ms: 1_700_000_000_000 + seq as i64,
                sequence: seq,
                channels: [Some(1.0); 7],
                extra: Default::default(),
            });
        }
        builder.finish().project(&(0..telemetry_schema().fields().len()).collect::<Vec<_>>()).unwrap()
    }

    /// A checkpointed stage's store: a segment holds only rows before the newest mark, the
    /// mark is durable once they are cut (at once when asked), and a clean stop cuts the rest.
    #[test]
    fn segments_end_at_marks_and_a_mark_is_durable_once_cut() {
        let dir = tempfile::tempdir().unwrap();
        let segments = SegmentStore::open(dir.path(), Kek::generate(1).unwrap()).unwrap();
        let config = StoreConfig { segment_interval: Duration::from_millis(300), ..Default::default() };
        let (mut store, writer) =
            TelemetryStore::prepare(segments, &config, LiveGrades::new(GradeMap::default()), true);
        let thread = crate::lifecycle::StageThread::spawn(writer).unwrap();
        let link = store.link();
        let rows_in = |store: &TelemetryStore| store.stats().rows_written;

        link.input.send(StoreInput::Mark { epoch: 1, now: false }).unwrap();
        assert_eq!(link.durability.wait_through(1, Duration::from_secs(5)), Reached::Yes, "nothing pending: at once");
        link.input.send(StoreInput::Rows(rows(0, 10))).unwrap();
        link.input.send(StoreInput::Mark { epoch: 2, now: false }).unwrap();
        link.input.send(StoreInput::Rows(rows(10, 5))).unwrap();
        assert_eq!(link.durability.wait_through(2, Duration::from_millis(100)), Reached::NotYet, "not due yet");
        assert_eq!(link.durability.wait_through(2, Duration::from_secs(5)), Reached::Yes, "cut when due");
        assert_eq!(rows_in(&store), 10, "only the rows before the mark");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(rows_in(&store), 10, "rows after the newest mark wait for the next one");

        link.input.send(StoreInput::Rows(rows(15, 1))).unwrap();
        link.input.send(StoreInput::Mark { epoch: 3, now: true }).unwrap();
        assert_eq!(link.durability.wait_through(3, Duration::from_millis(150)), Reached::Yes, "cut at once");
        assert_eq!(rows_in(&store), 16);

        link.input.send(StoreInput::Rows(rows(16, 4))).unwrap();
        drop(link);
        store.request_stop();
        thread.join().unwrap();
        assert_eq!(rows_in(&store), 20, "a clean stop cuts what is pending");
    }
}
