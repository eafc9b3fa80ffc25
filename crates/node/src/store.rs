//! The node's site-local store (`[store]`): every reading the detection stage takes in, and
//! every window result, alert event and late reading it produces, is kept in encrypted Parquet
//! segments (see `tessera-store`; one stream per table, see [`StoredStream`]), graded and
//! expired per grade and crypto-shredded as telemetry is, and served as the SQL tables
//! `telemetry`, `motor_windows`, `alerts` and `late_events` together with the rows not yet in
//! a segment: their history survives restarts and stays where it was made when a partition
//! moves (the site's query spans every node's store, see `tessera_sql::site`).
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

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
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
use tessera_core::{DataGrade, LiveGrades};
use tessera_store::{Kek, KekSealer, Retention, SegmentMeta, SegmentStore, ShredEvent, StoreError};

pub use crate::durability::StoredStream;
use crate::durability::{CloseOnDrop, Durability, StoreInput, StoreLink};
use crate::error::NodeError;
use crate::lifecycle::StageLoop;

type Result<T, E = NodeError> = std::result::Result<T, E>;

/// The `[store]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the segments, their manifest and the sealed key ring live (site-local disk);
    /// unset: no store (the tables then hold only the newest rows in memory).
    pub dir: Option<PathBuf>,
    /// This node's name among the site's nodes that share `dir` (a volume every node of the
    /// site mounts, e.g. ReadWriteMany): the node then writes under `dir/writers/<writer>`, and
    /// answers for a stored segment whenever it owns the Kafka partition the segment's rows
    /// came from, whichever node wrote it; so a site's history stays whole when a node is
    /// killed or leaves. Needs checkpoints (`[state]`). Unset: `dir` is this node's own, and it
    /// answers for every segment in it (while it runs).
    pub writer: Option<String>,
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
            writer: None,
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
        ensure(
            self.writer.as_deref().is_none_or(|w| {
                !w.is_empty()
                    && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && w != ".."
                    && w != "."
            }),
            "writer",
            "must be a non-empty name of letters, digits, '-', '_' and '.' (it names a directory)",
        )?;
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

    /// The directory this node writes its segments in: `dir`, or with a `writer`,
    /// `dir/writers/<writer>`.
    pub fn own_dir(&self) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(match &self.writer {
            Some(writer) => dir.join(WRITERS).join(writer),
            None => dir.clone(),
        })
    }

    /// Opens the configured store (its directory and KEK): with a `writer`, this node's part of
    /// the site's shared store.
    pub fn open(&self) -> Result<Option<SegmentStore>> {
        let Some(dir) = self.own_dir() else { return Ok(None) };
        let kek_file = self
            .kek_file
            .as_deref()
            .ok_or_else(|| ConfigError::new("store.kek_file", "a store needs the site's key-encryption key"))?;
        let kek = Kek::read(kek_file).map_err(store("store.kek_file"))?;
        let opened =
            SegmentStore::open(&dir, kek).map_err(store(&format!("opening the store in {}", dir.display())))?;
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

/// Under a shared store's `dir`, one directory per writing node.
const WRITERS: &str = "writers";

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
    /// Rows taken in but not yet in a segment, in the order they came.
    pending: Mutex<Vec<(StoredStream, RecordBatch)>>,
    stats: Mutex<StoreStats>,
    /// The partition (`topic/number`) of each motor the stage has marked (see
    /// [`StoreInput::Mark`]).
    partitions: Mutex<std::collections::HashMap<String, String>>,
    /// With a writer name: the site's shared store (`dir`) and this node's name in it.
    site: Option<(PathBuf, String)>,
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
        let site = match (&config.dir, &config.writer) {
            (Some(dir), Some(writer)) => Some((dir.clone(), writer.clone())),
            _ => None,
        };
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            pending: Mutex::new(Vec::new()),
            stats: Mutex::new(StoreStats::default()),
            partitions: Mutex::new(Default::default()),
            site,
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

    /// The SQL table of `stream` over its segments and pending rows. With a shared store,
    /// `owned` (the partitions this node answers for now, `topic/number`) chooses the segments
    /// it answers for, from every writer's.
    pub fn table(&self, stream: StoredStream, owned: OwnedPartitions) -> Arc<StoredTable> {
        Arc::new(StoredTable { shared: self.shared.clone(), stream, owned })
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

/// The partitions (`topic/number`) a node answers for now.
pub type OwnedPartitions = Arc<dyn Fn() -> std::collections::BTreeSet<String> + Send + Sync>;

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
                Ok(StoreInput::Rows(stream, batch)) => {
                    waiting.rows += batch.num_rows();
                    waiting.oldest.get_or_insert_with(Instant::now);
                    self.shared.pending.lock().map_err(|_| NodeError::Poisoned("pending rows"))?.push((stream, batch));
                    false
                }
                Ok(StoreInput::Mark { epoch, motors, .. }) if waiting.rows == 0 => {
                    self.learn(motors)?;
                    self.durability.durable_through(epoch);
                    false
                }
                Ok(StoreInput::Mark { epoch, now, motors }) => {
                    self.learn(motors)?;
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

    /// Records the partitions of the motors a mark names.
    fn learn(&self, motors: Vec<(String, String)>) -> Result<()> {
        if !motors.is_empty() {
            self.shared.partitions.lock().map_err(|_| NodeError::Poisoned("motor partitions"))?.extend(motors);
        }
        Ok(())
    }

    /// Writes the oldest `batches` pending batches (all, if fewer) as one segment per stream
    /// and partition; readers see each row either pending or stored.
    fn cut_segment(&self, batches: usize) -> Result<()> {
        let mut segments = self.shared.store.lock().map_err(|_| NodeError::Poisoned("store"))?;
        let mut pending = self.shared.pending.lock().map_err(|_| NodeError::Poisoned("pending rows"))?;
        let at = batches.min(pending.len());
        let rest = pending.split_off(at);
        let cut = std::mem::replace(&mut *pending, rest);
        drop(pending);
        let grades = self.grades.current();
        let partitions = self.shared.partitions.lock().map_err(|_| NodeError::Poisoned("motor partitions"))?;
        // One segment per stream and partition (`None`: a motor no mark named).
        type Part = (StoredStream, Option<String>);
        let mut parts: Vec<(Part, Vec<RecordBatch>)> = Vec::new();
        for (stream, batch) in cut {
            for (partition, rows) in split_by_partition(&batch, &partitions)? {
                match parts.iter_mut().find(|(k, _)| k.0 == stream && k.1 == partition) {
                    Some((_, batches)) => batches.push(rows),
                    None => parts.push(((stream, partition), vec![rows])),
                }
            }
        }
        drop(partitions);
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, ((stream, partition), rows)) in parts.iter().enumerate() {
            match segments.write_partition(stream.name(), partition.as_deref(), rows, &grades, now_ms()) {
                Ok(Some(meta)) => {
                    tracing::debug!(segment = %meta.id, stream = stream.name(), partition = ?partition, rows = meta.rows, bytes = meta.bytes, "segment written");
                    if let Ok(mut s) = self.shared.stats.lock() {
                        s.segments_written += 1;
                        s.rows_written += meta.rows;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // Keep the rows not written readable (and for the next try) rather than
                    // lose them; the parts written before stay written.
                    if let Ok(mut pending) = self.shared.pending.lock() {
                        let newer = std::mem::take(&mut *pending);
                        let unwritten =
                            parts[i..].iter().flat_map(|((s, _), rows)| rows.iter().map(|b| (*s, b.clone())));
                        *pending = unwritten.chain(newer).collect();
                    }
                    return Err(store(&format!("writing a {} segment", stream.name()))(e));
                }
            }
        }
        Ok(())
    }
}

/// `batch`'s rows grouped by the partition of their motor (`None`: not known).
fn split_by_partition(
    batch: &RecordBatch,
    partitions: &std::collections::HashMap<String, String>,
) -> Result<Vec<(Option<String>, RecordBatch)>> {
    let motors = batch
        .column_by_name("motor_id")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or(NodeError::Poisoned("a stored row without a motor_id"))?;
    let mut groups: Vec<(Option<&String>, Vec<u32>)> = Vec::new();
    for i in 0..motors.len() {
        let partition = partitions.get(motors.value(i));
        match groups.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, rows)) => rows.push(i as u32),
            None => groups.push((partition, vec![i as u32])),
        }
    }
    if groups.len() == 1 {
        return Ok(vec![(groups[0].0.cloned(), batch.clone())]);
    }
    groups
        .into_iter()
        .map(|(partition, rows)| {
            let rows = arrow_array::UInt32Array::from(rows);
            let take = |c: &ArrayRef| datafusion::arrow::compute::take(c.as_ref(), &rows, None);
            let columns = batch.columns().iter().map(take).collect::<Result<Vec<_>, _>>()?;
            Ok((partition.cloned(), RecordBatch::try_new(batch.schema(), columns)?))
        })
        .collect()
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

/// A stream's table over the store: the stream's segments whose time range can match the
/// query's filters on its event-time column, then its pending rows. A query needing a shredded
/// column of a segment it cannot rule out by time fails, naming the segment and why (the data
/// is gone).
pub struct StoredTable {
    shared: Arc<Shared>,
    stream: StoredStream,
    owned: OwnedPartitions,
}

impl std::fmt::Debug for StoredTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTable").field("stream", &self.stream).finish()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        self.stream.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // Filters on the event time prune segments; DataFusion still applies every filter to
        // the rows.
        let time = self.stream.time_column();
        Ok(filters
            .iter()
            .map(|f| {
                if time_bounds(f, time).is_some() {
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
        let (full, table, time) = (self.stream.schema(), self.stream.name(), self.stream.time_column());
        let indices: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..full.fields().len()).collect());
        let schema = Arc::new(full.project(&indices)?);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let (mut lo, mut hi) = (i64::MIN, i64::MAX);
        for f in filters {
            if let Some((l, h)) = time_bounds(f, time) {
                lo = lo.max(l);
                hi = hi.min(h);
            }
        }
        // Under the store's lock only the segment list is read and each segment's file and keys
        // opened; decoding happens after, so a scan never holds up the store's writer.
        let shredded = |e: tessera_store::StoreError| match e {
            tessera_store::StoreError::Shredded { .. } => {
                let hint = format!("filter on {time} to leave the range out, or leave its columns out");
                datafusion::error::DataFusionError::External(Box::new(tessera_sql::SqlError::Destroyed(format!(
                    "{table}: {e}; {hint}"
                ))))
            }
            other => datafusion::error::DataFusionError::Execution(format!("{table}: {other}")),
        };
        let wanted = |s: &SegmentMeta| s.max_ts_ms >= lo && s.min_ts_ms <= hi && s.stream == table;
        // A shared store: each segment of a partition is answered by the partition's owner
        // (from whichever writer's directory), a segment of no known partition by its writer.
        let owned = self.shared.site.as_ref().map(|_| (self.owned)());
        let answers = |s: &SegmentMeta, own: bool| match (&owned, &s.partition) {
            (None, _) => own,
            (Some(owned), Some(p)) => owned.contains(p),
            (Some(_), None) => own,
        };
        let (mut opened, pending) = {
            let store = self
                .shared
                .store
                .lock()
                .map_err(|_| datafusion::error::DataFusionError::Execution("store lock poisoned".into()))?;
            let opened = store
                .segments()
                .iter()
                .filter(|s| wanted(s) && answers(s, true))
                .map(|segment| store.open_segment(&segment.id, Some(&names)).map_err(shredded))
                .collect::<Result<Vec<_>, _>>()?;
            let pending = self
                .shared
                .pending
                .lock()
                .map_err(|_| datafusion::error::DataFusionError::Execution("pending lock poisoned".into()))?
                .iter()
                .filter(|(s, _)| *s == self.stream)
                .map(|(_, b)| b.clone())
                .collect::<Vec<_>>();
            (opened, pending)
        };
        if let Some((dir, me)) = &self.shared.site {
            let siblings = {
                let store = self
                    .shared
                    .store
                    .lock()
                    .map_err(|_| datafusion::error::DataFusionError::Execution("store lock poisoned".into()))?;
                other_writers(dir, me)
                    .and_then(|dirs| dirs.into_iter().map(|d| store.open_sibling(d)).collect::<Result<Vec<_>, _>>())
                    .map_err(shredded)?
            };
            for sibling in siblings {
                for segment in sibling.segments().iter().filter(|s| wanted(s) && answers(s, false)) {
                    opened.push(sibling.open_segment(&segment.id, Some(&names)).map_err(shredded)?);
                }
            }
        }
        let mut batches = Vec::new();
        for segment in opened {
            for b in segment.batches().map_err(shredded)? {
                // (With no column asked for, e.g. `count(*)`, only the row count carries over.)
                let rows = arrow_array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
                batches.push(RecordBatch::try_new_with_options(schema.clone(), b.columns().to_vec(), &rows)?);
            }
        }
        for b in &pending {
            batches.push(b.project(&indices)?);
        }
        Ok(MemorySourceConfig::try_new_exec(&[batches], schema, None)?)
    }
}

/// The directories of a shared store's writers other than `me`.
fn other_writers(dir: &Path, me: &str) -> std::result::Result<Vec<PathBuf>, StoreError> {
    let writers = dir.join(WRITERS);
    let entries =
        std::fs::read_dir(&writers).map_err(|cause| StoreError::Io { op: "list", path: writers.clone(), cause })?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|cause| StoreError::Io { op: "list", path: writers.clone(), cause })?;
        if entry.file_name() != me && entry.path().join("manifest.json").exists() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The `[lo, hi]` event-time bounds (ms) a filter on the `time` column puts on the rows, if it
/// is one.
fn time_bounds(filter: &Expr, time: &str) -> Option<(i64, i64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else { return None };
    let (column, value, op) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), v) => (c, v, *op),
        (v, Expr::Column(c)) => (c, v, op.swap()?),
        _ => return None,
    };
    if column.name != time {
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
    use tessera_core::{GradeMap, MotorId, Reading, SiteId, telemetry_schema};

    fn rows(first_seq: u64, n: u64) -> RecordBatch {
        readings(first_seq, n, 1, |_| 1.0)
    }

    /// `n` readings of motor M1 from `first_seq`, `step_ms` apart, current `current(seq)`.
    fn readings(first_seq: u64, n: u64, step_ms: i64, current: impl Fn(u64) -> f64) -> RecordBatch {
        readings_of(&["M1"], first_seq, n, step_ms, current)
    }

    /// [`readings`] of each of `motors` in turn.
    fn readings_of(motors: &[&str], first_seq: u64, n: u64, step_ms: i64, current: impl Fn(u64) -> f64) -> RecordBatch {
        let mut builder = tessera_ingest::ShardBuilder::with_capacity(n as usize);
        for (seq, motor) in (first_seq..first_seq + n).flat_map(|seq| motors.iter().map(move |m| (seq, m))) {
            let mut channels = [Some(1.0); 7];
            channels[0] = Some(current(seq));
            builder.append(&Reading {
                motor_id: MotorId::new(*motor).unwrap(),
                site_id: SiteId::new("s").unwrap(),
                event_time_ms: 1_700_000_000_000 + seq as i64 * step_ms,
                sequence: seq,
                channels,
                extra: Default::default(),
            });
        }
        builder.finish().project(&(0..telemetry_schema().fields().len()).collect::<Vec<_>>()).unwrap()
    }

    fn count(ctx: &datafusion::prelude::SessionContext, rt: &tokio::runtime::Runtime, sql: &str) -> i64 {
        let batches =
            rt.block_on(async { ctx.sql(sql).await?.collect().await }).unwrap_or_else(|e| panic!("{sql}: {e}"));
        batches[0].column(0).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap().value(0)
    }

    /// A store the site's nodes share: each writer files its rows under their motors'
    /// partitions, and a node answers for every writer's segments of the partitions it owns
    /// (and for its own pending rows), so the owners together answer each row once.
    #[test]
    fn a_shared_store_is_answered_by_partition_whoever_wrote_it() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::generate(1).unwrap();
        let grades = LiveGrades::new(GradeMap::builtin());
        let node = |writer: &str| {
            let config = StoreConfig {
                dir: Some(dir.path().to_path_buf()),
                writer: Some(writer.into()),
                segment_interval: Duration::from_secs(3600),
                ..Default::default()
            };
            let segments = SegmentStore::open(config.own_dir().unwrap(), kek.clone()).unwrap();
            let (store, writer) = TelemetryStore::prepare(segments, &config, grades.clone(), true);
            (store, crate::lifecycle::StageThread::spawn(writer).unwrap())
        };
        let (a, a_thread) = node("a");
        let (b, b_thread) = node("b");
        let motors = |m: &[(&str, &str)]| m.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        let (a_link, b_link) = (a.link(), b.link());
        a_link
            .input
            .send(StoreInput::Rows(StoredStream::Telemetry, readings_of(&["M1", "M2"], 0, 10, 1, |_| 1.0)))
            .unwrap();
        a_link
            .input
            .send(StoreInput::Mark { epoch: 1, now: true, motors: motors(&[("M1", "t/0"), ("M2", "t/1")]) })
            .unwrap();
        assert_eq!(a_link.durability.wait_through(1, Duration::from_secs(5)), Reached::Yes);
        // B took partition 1 over: its new readings of M2 wait in B's memory.
        b_link.input.send(StoreInput::Rows(StoredStream::Telemetry, readings_of(&["M2"], 10, 5, 1, |_| 1.0))).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let parts: Vec<Option<String>> =
            a.shared.store.lock().unwrap().segments().iter().map(|s| s.partition.clone()).collect();
        assert_eq!(parts, [Some("t/0".to_string()), Some("t/1".to_string())], "one segment per partition");
        let answer = |store: &TelemetryStore, owned: &[&str]| {
            let owned: std::collections::BTreeSet<String> = owned.iter().map(|p| p.to_string()).collect();
            let ctx = datafusion::prelude::SessionContext::new();
            ctx.register_table("telemetry", store.table(StoredStream::Telemetry, Arc::new(move || owned.clone())))
                .unwrap();
            let per_motor = "SELECT count(*) FILTER (WHERE motor_id = 'M1') * 1000 + count(*) FILTER (WHERE motor_id = 'M2') FROM telemetry";
            count(&ctx, &rt, per_motor)
        };
        assert_eq!(answer(&a, &["t/0"]), 10_000, "A: its partition's segment");
        assert_eq!(answer(&b, &["t/1"]), 15, "B: A's segment of partition 1 and its own pending rows");
        assert_eq!(answer(&a, &["t/0"]) + answer(&b, &["t/1"]), 10_015, "together: every row once");
        assert_eq!(answer(&b, &["t/0", "t/1"]), 10_015, "one node owning both answers for A's segments too");
        for (link, mut store, thread) in [(a_link, a, a_thread), (b_link, b, b_thread)] {
            drop(link);
            store.request_stop();
            thread.join().unwrap();
        }
    }

    /// Window results, alert events and late readings are kept as telemetry is: each stream in
    /// segments of its own, served as its table (segments and pending rows), after a restart too.
    #[test]
    fn every_stream_is_kept_in_its_own_segments_and_served_after_a_restart() {
        use tessera_stream::{StreamConfig, StreamEngine};
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut engine = StreamEngine::new(StreamConfig::default());
        rt.block_on(engine.register(
            "CREATE CONTINUOUS QUERY hot WITH (open_above = 5, close_below = 2, open_windows = 1, close_windows = 1) AS
             SELECT motor_id, window_start, window_end, avg(current_a) AS score
             FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start, window_end",
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::generate(1).unwrap();
        let config = StoreConfig { segment_interval: Duration::from_secs(3600), ..Default::default() };
        let grades = LiveGrades::new(GradeMap::builtin());
        let open = |kek: &Kek| SegmentStore::open(dir.path(), kek.clone()).unwrap();
        let (mut store, writer) = TelemetryStore::prepare(open(&kek), &config, grades.clone(), false);
        let thread = crate::lifecycle::StageThread::spawn(writer).unwrap();
        let link = store.link();
        let ctx = datafusion::prelude::SessionContext::new();
        for stream in StoredStream::ALL {
            ctx.register_table(stream.name(), store.table(stream, Arc::new(Default::default))).unwrap();
        }
        // 60 s at 10 Hz, current 10 A from 30 s (an alert opens), back to 1 A at 40 s (it
        // closes); then a reading 40 s late.
        let current = |seq: u64| if (300..400).contains(&seq) { 10.0 } else { 1.0 };
        let late = readings(50, 1, 100, current);
        let mut sent = 0;
        for batch in [readings(0, 600, 100, current), late] {
            link.input.send(StoreInput::Rows(StoredStream::Telemetry, batch.clone())).unwrap();
            let out = rt.block_on(engine.push(&batch, 0)).unwrap();
            let made = out.window_rows.iter().map(|b| (StoredStream::MotorWindows, b));
            let made = made.chain(out.alert_rows.iter().map(|b| (StoredStream::Alerts, b)));
            for (stream, b) in made.chain(out.late.iter().map(|b| (StoredStream::LateEvents, b))) {
                link.input.send(StoreInput::Rows(stream, b.clone())).unwrap();
                sent += 1;
            }
        }
        assert!(sent >= 3, "the engine made windows, alerts and a late reading");
        let expected = |table: &str| {
            let sql = format!("SELECT count(*) FROM {table}");
            let b = rt.block_on(engine.sql(&sql)).unwrap();
            b[0].column(0).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap().value(0)
        };
        let wanted: Vec<(StoredStream, i64)> = StoredStream::ALL.iter().map(|s| (*s, expected(s.name()))).collect();
        assert_eq!(wanted.iter().map(|(_, n)| *n).collect::<Vec<_>>()[1..], [5, 2, 1], "windows, open+close, late");
        std::thread::sleep(Duration::from_millis(300));
        for (stream, n) in &wanted {
            assert_eq!(count(&ctx, &rt, &format!("SELECT count(*) FROM {}", stream.name())), *n, "pending {stream:?}");
        }
        drop(link);
        store.request_stop();
        thread.join().unwrap();
        let (reopened, _writer) = TelemetryStore::prepare(open(&kek), &config, grades, false);
        let segments = reopened.shared.store.lock().unwrap().segments().to_vec();
        let mut streams: Vec<&str> = segments.iter().map(|s| s.stream.as_str()).collect();
        streams.sort();
        assert_eq!(streams, ["alerts", "late_events", "motor_windows", "telemetry"], "one segment per stream");
        let ctx = datafusion::prelude::SessionContext::new();
        for stream in StoredStream::ALL {
            ctx.register_table(stream.name(), reopened.table(stream, Arc::new(Default::default))).unwrap();
        }
        for (stream, n) in &wanted {
            assert_eq!(count(&ctx, &rt, &format!("SELECT count(*) FROM {}", stream.name())), *n, "stored {stream:?}");
        }
        let open_alert = "SELECT count(*) FROM alerts WHERE state = 'open' AND motor_id = 'M1' AND score > 5";
        assert_eq!(count(&ctx, &rt, open_alert), 1, "an alert's row reads back whole");
        // The windows' own time prunes: the segment spans 0–50 s, so a later range reads none.
        let after = "SELECT count(*) FROM motor_windows WHERE window_start >= TIMESTAMP '2030-01-01T00:00:00Z'";
        assert_eq!(count(&ctx, &rt, after), 0);
        let window = segments.iter().find(|s| s.stream == "motor_windows").unwrap();
        assert_eq!((window.min_ts_ms, window.max_ts_ms), (1_700_000_000_000, 1_700_000_040_000), "by window_start");
        // Graded as the grade map says: the window keys under the general key, the values
        // (score, features) under the important one, each grade its own data key.
        let columns = |g: DataGrade| window.grades.get(&g).map(|k| k.columns.clone()).unwrap_or_default();
        assert_eq!(columns(DataGrade::General), ["query", "motor_id", "window_start", "window_end"]);
        assert_eq!(columns(DataGrade::Important), ["score", "features"]);
        assert_ne!(window.grades[&DataGrade::General].key_id, window.grades[&DataGrade::Important].key_id);
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

        link.input.send(StoreInput::Mark { epoch: 1, now: false, motors: vec![] }).unwrap();
        assert_eq!(link.durability.wait_through(1, Duration::from_secs(5)), Reached::Yes, "nothing pending: at once");
        link.input.send(StoreInput::Rows(StoredStream::Telemetry, rows(0, 10))).unwrap();
        link.input.send(StoreInput::Mark { epoch: 2, now: false, motors: vec![] }).unwrap();
        link.input.send(StoreInput::Rows(StoredStream::Telemetry, rows(10, 5))).unwrap();
        assert_eq!(link.durability.wait_through(2, Duration::from_millis(100)), Reached::NotYet, "not due yet");
        assert_eq!(link.durability.wait_through(2, Duration::from_secs(5)), Reached::Yes, "cut when due");
        assert_eq!(rows_in(&store), 10, "only the rows before the mark");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(rows_in(&store), 10, "rows after the newest mark wait for the next one");

        link.input.send(StoreInput::Rows(StoredStream::Telemetry, rows(15, 1))).unwrap();
        link.input.send(StoreInput::Mark { epoch: 3, now: false, motors: vec![] }).unwrap();
        assert_eq!(link.durability.wait_through(3, Duration::from_secs(5)), Reached::Yes, "the rest, when due");
        assert_eq!(rows_in(&store), 16);

        link.input.send(StoreInput::Rows(StoredStream::Telemetry, rows(16, 4))).unwrap();
        drop(link);
        store.request_stop();
        thread.join().unwrap();
        assert_eq!(rows_in(&store), 20, "a clean stop cuts what is pending");
    }

    /// A mark that asks for it is cut at once, long before a segment would be due.
    #[test]
    fn a_mark_with_now_is_cut_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let segments = SegmentStore::open(dir.path(), Kek::generate(1).unwrap()).unwrap();
        let config = StoreConfig { segment_interval: Duration::from_secs(3600), ..Default::default() };
        let (mut store, writer) =
            TelemetryStore::prepare(segments, &config, LiveGrades::new(GradeMap::default()), true);
        let thread = crate::lifecycle::StageThread::spawn(writer).unwrap();
        let link = store.link();
        link.input.send(StoreInput::Rows(StoredStream::Telemetry, rows(0, 3))).unwrap();
        link.input.send(StoreInput::Mark { epoch: 1, now: true, motors: vec![] }).unwrap();
        assert_eq!(
            link.durability.wait_through(1, Duration::from_secs(60)),
            Reached::Yes,
            "cut at once, not in an hour"
        );
        assert_eq!(store.stats().rows_written, 3);
        drop(link);
        store.request_stop();
        thread.join().unwrap();
    }
}
