//! The window operator: buffers each motor's readings until their event-time windows close,
//! then hands the closed windows over as one Arrow batch.
//!
//! Rows are not copied on the way in: the operator keeps the ingest batches and, per open
//! window, the (batch, row) positions of its readings; a closing window gathers its rows with
//! Arrow's `interleave`. A batch is dropped once no open window and no pending late row points
//! into it. Only the columns its queries read are gathered ([`WindowOperator::set_outputs`]);
//! `motor_id` and `site_id` are written from the window's motor rather than gathered.
//!
//! Tumbling and hopping windows can also fold each reading into running aggregates
//! ([`crate::preagg`]) as it arrives; when no query needs the rows themselves, the operator then
//! keeps no rows at all, only a few numbers per open window.
//!
//! A pushed batch is first grouped by motor (a counting sort that keeps arrival order within
//! a motor), so each motor's watermark and open windows are looked up once per batch, and a
//! motor's readings for one window are folded in column by column.
//!
//! Watermarks are per motor (see [`tessera_core::MotorWatermark`]): a window closes when its
//! motor's watermark (newest event time minus the allowed lateness) passes its end, or when the
//! motor has been silent for the idle timeout. A reading is late if it is behind its motor's
//! watermark, or if its earliest window has already been emitted; late readings are not added to
//! any window but returned on the late path.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{interleave, interleave_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use tessera_core::{MotorWatermark, TelemetryColumn, WatermarkPolicy, Window, WindowSpec, telemetry_schema};

use serde::{Deserialize, Serialize};

use crate::StreamError;
use crate::checkpoint;
use crate::preagg::{AggKind, AggSpec, ColumnStats, aggregated_schema};

/// The schema of closed-window batches: the telemetry columns, then `window_start` and
/// `window_end` (Timestamp ms UTC).
pub fn windowed_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields: Vec<Field> = telemetry_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new("window_start", ts_type(), false));
            fields.push(Field::new("window_end", ts_type(), false));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Timestamp(ms, UTC), the type of every time column.
pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Where a buffered reading is: (batch slot, row).
type RowRef = (u32, u32);

/// An open window's readings.
#[derive(Debug, Default)]
struct OpenWindow {
    end_ms: i64,
    /// Newest event time inside (sessions grow from it).
    last_event_ms: i64,
    rows: Vec<RowRef>,
    /// Readings in the window.
    count: u64,
    /// Running statistics of the aggregated columns (see [`WindowOperator::set_outputs`]).
    stats: Vec<ColumnStats>,
}

impl OpenWindow {
    fn new(end_ms: i64, capacity: usize, aggregated_columns: usize) -> Self {
        Self { end_ms, last_event_ms: i64::MIN, rows: Vec::with_capacity(capacity), count: 0, stats: vec![ColumnStats::default(); aggregated_columns] }
    }

    /// Adds a reading: its position if rows are kept, its values to the running statistics.
    #[inline]
    fn fold(&mut self, r: RowRef, ts: i64, keep_rows: bool, inputs: &[AggInput]) {
        self.fold_run(r.0, &[r.1], &[r.1], ts, keep_rows, inputs);
    }

    /// Adds readings `rows` of batch `slot` (in arrival order; `newest_ms` their newest event
    /// time), one column at a time; their values are at `positions` of `inputs`.
    #[inline]
    fn fold_run(&mut self, slot: u32, rows: &[u32], positions: &[u32], newest_ms: i64, keep_rows: bool, inputs: &[AggInput]) {
        if keep_rows {
            self.rows.extend(rows.iter().map(|&row| (slot, row)));
        }
        self.count += rows.len() as u64;
        self.last_event_ms = self.last_event_ms.max(newest_ms);
        // Up to four columns in lockstep (see `ColumnStats::add_rows`).
        for (stats, inputs) in self.stats.chunks_mut(4).zip(inputs.chunks(4)) {
            match stats.len() {
                4 => fold_columns::<4>(stats, inputs, positions),
                3 => fold_columns::<3>(stats, inputs, positions),
                2 => fold_columns::<2>(stats, inputs, positions),
                _ => fold_columns::<1>(stats, inputs, positions),
            }
        }
    }
}

/// Folds `rows` of `N` columns into their statistics together.
#[inline]
fn fold_columns<const N: usize>(stats: &mut [ColumnStats], inputs: &[AggInput], rows: &[u32]) {
    let stats: &mut [ColumnStats; N] = stats.try_into().expect("one statistics entry per input column");
    ColumnStats::add_rows(stats, std::array::from_fn(|k| (inputs[k].values, inputs[k].moments)), rows);
}

/// A motor's open windows, sorted by start. A motor has few open at once (one or two for a
/// tumbling window, size/slide for a hopping one), so a sorted vector beats a tree: it is
/// compact, and the reading's window is usually the last one.
#[derive(Debug, Default)]
struct OpenWindows(Vec<(i64, OpenWindow)>);

impl OpenWindows {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&i64, &OpenWindow)> {
        self.0.iter().map(|(s, w)| (s, w))
    }

    /// Windows starting before `start_ms`.
    fn starting_before(&self, start_ms: i64) -> impl Iterator<Item = (&i64, &OpenWindow)> {
        self.iter().take_while(move |(s, _)| **s < start_ms)
    }

    fn remove(&mut self, start_ms: &i64) -> Option<OpenWindow> {
        let i = self.0.binary_search_by_key(start_ms, |(s, _)| *s).ok()?;
        Some(self.0.remove(i).1)
    }

    fn insert(&mut self, start_ms: i64, window: OpenWindow) {
        match self.0.binary_search_by_key(&start_ms, |(s, _)| *s) {
            Ok(i) => self.0[i].1 = window,
            Err(i) => self.0.insert(i, (start_ms, window)),
        }
    }

    /// The position of the window starting at `start_ms`, opened with `open` if missing.
    #[inline]
    fn position_or_open(&mut self, start_ms: i64, open: impl FnOnce() -> OpenWindow) -> usize {
        match self.0.last() {
            Some((s, _)) if *s == start_ms => self.0.len() - 1,
            _ => match self.0.binary_search_by_key(&start_ms, |(s, _)| *s) {
                Ok(i) => i,
                Err(i) => {
                    self.0.insert(i, (start_ms, open()));
                    i
                }
            },
        }
    }

    /// The window starting at `start_ms`, opened with `open` if missing.
    #[inline]
    fn get_or_open(&mut self, start_ms: i64, open: impl FnOnce() -> OpenWindow) -> &mut OpenWindow {
        let i = self.position_or_open(start_ms, open);
        &mut self.0[i].1
    }
}

/// A column the operator aggregates, in the batch being pushed.
struct AggInput<'a> {
    values: &'a Float64Array,
    moments: bool,
}

/// The batch being pushed, as [`WindowOperator::add_run`] reads it.
#[derive(Clone, Copy)]
struct Pushed<'a> {
    slot: u32,
    times: &'a [i64],
    now_ms: i64,
    /// The aggregated columns, by row number.
    inputs: &'a [AggInput<'a>],
    /// The same, gathered into grouped order ([`MotorRuns::rows`]); tumbling windows only.
    grouped: &'a [AggInput<'a>],
}

/// A batch's rows grouped by motor, so that each motor's state is looked up once per batch
/// rather than once per reading (an ingest batch interleaves many motors). Kept between batches
/// to reuse its buffers.
#[derive(Debug, Default)]
struct MotorRuns {
    /// Per motor index: its group in the batch being grouped, or `u32::MAX`.
    group_of: Vec<u32>,
    /// Per group: the motor index.
    motors: Vec<usize>,
    /// Per group: where its rows start in `rows`; one more entry closes the last group.
    starts: Vec<u32>,
    /// Row numbers, group after group, in arrival order within a group.
    rows: Vec<u32>,
    /// Per row: its motor index, then its group.
    row_group: Vec<u32>,
}

impl MotorRuns {
    /// Groups `rows` by the motor index `motor_of` gives each (`known_motors` are
    /// indexed already; `motor_of` may add more); groups come in order of first appearance.
    fn group(&mut self, rows: std::ops::Range<usize>, known_motors: usize, mut motor_of: impl FnMut(usize) -> usize) {
        self.motors.clear();
        self.starts.clear();
        self.row_group.clear();
        // Motor indices first, in a loop of their own: the lookups do not depend on each other,
        // so several are in flight at once.
        let (first, n) = (rows.start, rows.len());
        self.row_group.extend(rows.map(|row| motor_of(row) as u32));
        let motors = self.row_group.iter().max().map_or(0, |&m| m as usize + 1);
        self.group_of.resize(known_motors.max(motors).max(self.group_of.len()), u32::MAX);
        for slot in &mut self.row_group {
            let idx = *slot as usize;
            let mut g = self.group_of[idx];
            if g == u32::MAX {
                g = self.motors.len() as u32;
                self.group_of[idx] = g;
                self.motors.push(idx);
                self.starts.push(0);
            }
            self.starts[g as usize] += 1;
            *slot = g;
        }
        // Counts → start positions (exclusive prefix sums), then place each row.
        let mut next = 0;
        for start in &mut self.starts {
            (*start, next) = (next, next + *start);
        }
        self.starts.push(next);
        self.rows.clear();
        self.rows.resize(n, 0);
        let mut cursor = self.starts.clone();
        for (row, &g) in self.row_group.iter().enumerate() {
            self.rows[cursor[g as usize] as usize] = (first + row) as u32;
            cursor[g as usize] += 1;
        }
        for &idx in &self.motors {
            self.group_of[idx] = u32::MAX;
        }
    }

    /// Each group's motor index, where its rows start in [`Self::rows`], and its rows.
    fn iter(&self) -> impl Iterator<Item = (usize, usize, &[u32])> {
        self.motors.iter().enumerate().map(|(g, &idx)| {
            let (start, end) = (self.starts[g] as usize, self.starts[g + 1] as usize);
            (idx, start, &self.rows[start..end])
        })
    }
}

/// One motor's windows.
#[derive(Debug, Default)]
struct MotorWindows {
    /// The motor id and its site (from its first reading).
    id: Arc<str>,
    site: Arc<str>,
    watermark: MotorWatermark,
    /// Windows ending at or before this were emitted.
    emitted_through_ms: i64,
    /// Open windows by start.
    open: OpenWindows,
    /// Rows in the motor's last emitted window: a new window's buffer starts at this size.
    typical_rows: usize,
    /// The motor's own counters, checkpointed with it (they move with the motor when its
    /// partition moves): readings that joined a window, readings sent late, windows emitted.
    counts: [u64; 3],
}

/// Batches in use, with how many buffered rows point into each.
#[derive(Debug, Default)]
struct Arena {
    slots: Vec<Option<(RecordBatch, usize)>>,
    free: Vec<u32>,
}

impl Arena {
    fn insert(&mut self, batch: RecordBatch) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some((batch, 0));
                i
            }
            None => {
                self.slots.push(Some((batch, 0)));
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn add_refs(&mut self, slot: u32, count: usize) {
        if let Some((_, n)) = &mut self.slots[slot as usize] {
            *n += count;
        }
    }

    fn release(&mut self, slot: u32, count: usize) {
        if let Some((_, n)) = &mut self.slots[slot as usize] {
            *n -= count;
            if *n == 0 {
                self.slots[slot as usize] = None;
                self.free.push(slot);
            }
        }
    }

    /// Drops a slot nothing points into (a batch whose rows were all late or invalid).
    fn release_if_unused(&mut self, slot: u32) {
        if matches!(self.slots[slot as usize], Some((_, 0))) {
            self.slots[slot as usize] = None;
            self.free.push(slot);
        }
    }

    /// Releases the references of gathered rows (runs of one slot at a time).
    fn release_rows(&mut self, rows: &[RowRef]) {
        for run in rows.chunk_by(|a, b| a.0 == b.0) {
            self.release(run[0].0, run.len());
        }
    }

    /// The batches `rows` point into, and each row as (index into those batches, row).
    fn picks(&self, rows: &[RowRef]) -> (Vec<&RecordBatch>, Vec<(usize, usize)>) {
        // Slot → position in `batches` (usize::MAX: not yet there).
        let mut position = vec![usize::MAX; self.slots.len()];
        let mut batches: Vec<&RecordBatch> = Vec::new();
        let mut picks = Vec::with_capacity(rows.len());
        for &(slot, row) in rows {
            let pos = &mut position[slot as usize];
            if *pos == usize::MAX {
                batches.push(&self.slots[slot as usize].as_ref().expect("live slot").0);
                *pos = batches.len() - 1;
            }
            picks.push((*pos, row as usize));
        }
        (batches, picks)
    }

    /// Gathers rows into one batch in the given order.
    fn gather(&self, rows: &[RowRef]) -> Result<RecordBatch, StreamError> {
        let (batches, picks) = self.picks(rows);
        if batches.is_empty() {
            return Ok(RecordBatch::new_empty(telemetry_schema()));
        }
        Ok(interleave_record_batch(&batches, &picks)?)
    }

    /// Gathers one column of rows, in the given order.
    fn gather_column(batches: &[&RecordBatch], picks: &[(usize, usize)], column: usize) -> Result<ArrayRef, StreamError> {
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(column).as_ref()).collect();
        Ok(interleave(&arrays, picks)?)
    }

    fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

/// Counters of one operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Readings added to at least one window.
    pub rows_in: u64,
    /// Readings sent to the late path.
    pub rows_late: u64,
    /// Windows emitted.
    pub windows_closed: u64,
    /// Windows closed by the idle timeout rather than the watermark.
    pub windows_closed_idle: u64,
    /// Windows open now.
    pub windows_open: u64,
    /// Ingest batches held now.
    pub batches_held: u64,
}

/// Windows of one [`WindowSpec`] over every motor.
#[derive(Debug)]
pub struct WindowOperator {
    spec: WindowSpec,
    policy: WatermarkPolicy,
    /// Motor id → index; foldhash because this lookup runs once per reading (short keys, no
    /// need for DoS resistance: the ids passed ingest validation).
    motor_index: HashMap<u128, usize, foldhash::fast::FixedState>,
    /// The same for ids too long for [`short_key`].
    long_motor_index: HashMap<Arc<str>, usize, foldhash::fast::FixedState>,
    motors: Vec<MotorWindows>,
    arena: Arena,
    late: Vec<RowRef>,
    stats: WindowStats,
    /// Scratch for grouping each batch by motor.
    runs: MotorRuns,
    /// Scratch for the readings of one motor and window in a batch: row numbers, and
    /// positions in grouped order.
    run_rows: Vec<u32>,
    run_positions: Vec<u32>,
    /// Whether windows keep their rows (some query reads raw rows).
    keep_rows: bool,
    /// The telemetry columns closed windows carry (indices, ascending).
    columns: Vec<usize>,
    /// The schema of closed-window batches: `columns`, then `window_start`, `window_end`.
    closed_schema: SchemaRef,
    /// The aggregates computed as readings arrive, and the pre-aggregated batches' schema.
    aggregates: Vec<AggSpec>,
    aggregates_schema: SchemaRef,
    /// The columns those aggregates read (telemetry index, whether variance terms are needed),
    /// and for each aggregate, its column's position here.
    aggregated_columns: Vec<(usize, bool)>,
    aggregate_input: Vec<usize>,
}

/// A motor id of up to 15 bytes (the usual case) packed with its length into an integer, so
/// the per-reading lookup hashes and compares an integer, not a string; `None` for longer ids.
/// Byte `i` of the id is byte `i` of the little-endian integer; byte 15 holds the length.
#[inline]
fn short_key(id: &str) -> Option<u128> {
    let bytes = id.as_bytes();
    (bytes.len() < 16).then(|| {
        let mut packed = [0u8; 16];
        packed[..bytes.len()].copy_from_slice(bytes);
        packed[15] = bytes.len() as u8;
        u128::from_le_bytes(packed)
    })
}

/// [`short_key`] of the id at `data[start..start + len]`, read as one 16-byte load and
/// masked where the buffer has 16 bytes from `start` (all rows but the last few of a column).
/// The byte-wise copy in [`short_key`] costs a store-to-load forwarding stall per reading.
#[inline]
fn short_key_in(data: &[u8], start: usize, len: usize, id: &str) -> Option<u128> {
    if len >= 16 {
        return None;
    }
    match data.get(start..start + 16) {
        Some(chunk) => {
            let word = u128::from_le_bytes(chunk.try_into().expect("16 bytes"));
            let mask = (1u128 << (8 * len)) - 1;
            Some((word & mask) | ((len as u128) << 120))
        }
        None => short_key(id),
    }
}

/// What one step closed.
#[derive(Debug)]
pub struct Closed {
    /// The rows of every window that closed, in [`windowed_schema`] projected to the operator's
    /// columns ([`WindowOperator::set_outputs`]), grouped by motor and window; `None` if none
    /// closed or rows are not kept.
    pub windows: Option<RecordBatch>,
    /// One row per closed window with its aggregates ([`crate::preagg::aggregated_schema`]);
    /// `None` if none closed or no aggregates are computed.
    pub aggregates: Option<RecordBatch>,
    /// How many windows closed.
    pub count: usize,
    /// Motor id → site of the motors whose windows closed.
    pub sites: HashMap<String, String>,
}

impl Closed {
    fn none() -> Self {
        Self { windows: None, aggregates: None, count: 0, sites: HashMap::new() }
    }
}

impl WindowOperator {
    /// An operator for `spec` (already validated) and `policy`.
    pub fn new(spec: WindowSpec, policy: WatermarkPolicy) -> Self {
        Self {
            spec,
            policy,
            motor_index: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            long_motor_index: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            motors: Vec::new(),
            arena: Arena::default(),
            late: Vec::new(),
            runs: MotorRuns::default(),
            run_rows: Vec::new(),
            run_positions: Vec::new(),
            stats: WindowStats::default(),
            keep_rows: true,
            columns: (0..telemetry_schema().fields().len()).collect(),
            closed_schema: windowed_schema(),
            aggregates: Vec::new(),
            aggregates_schema: aggregated_schema(&[]),
            aggregated_columns: Vec::new(),
            aggregate_input: Vec::new(),
        }
    }

    /// The schema of the batches closed windows come in.
    pub fn closed_schema(&self) -> SchemaRef {
        self.closed_schema.clone()
    }

    /// True once a reading arrived: from then on, outputs can only be widened for windows
    /// that open later, so the engine sets them before.
    pub fn has_input(&self) -> bool {
        self.stats.rows_in + self.stats.rows_late > 0
    }

    /// What closed windows carry:
    /// - `rows`: the raw columns, as indices into [`windowed_schema`] (the union of what the
    ///   raw-row queries on these windows read), or `None` if no query reads raw rows (the
    ///   operator then keeps none). `window_start` and `window_end` are always there; other
    ///   telemetry columns are left out, so they cost nothing to gather.
    /// - `aggregates`: what to compute as readings arrive (tumbling and hopping windows only).
    pub fn set_outputs(&mut self, rows: Option<Vec<usize>>, aggregates: Vec<AggSpec>) {
        assert!(
            aggregates.is_empty() || !matches!(self.spec, WindowSpec::Session { .. }),
            "session windows merge, so they keep rows rather than running aggregates"
        );
        self.keep_rows = rows.is_some();
        self.set_columns(rows.unwrap_or_default());
        let mut aggregates = aggregates;
        aggregates.sort_unstable();
        aggregates.dedup();
        self.aggregated_columns.clear();
        self.aggregate_input.clear();
        for a in &aggregates {
            if a.kind == AggKind::CountRows {
                self.aggregate_input.push(usize::MAX);
                continue;
            }
            let pos = match self.aggregated_columns.iter().position(|(c, _)| *c == a.column) {
                Some(p) => p,
                None => {
                    self.aggregated_columns.push((a.column, false));
                    self.aggregated_columns.len() - 1
                }
            };
            self.aggregated_columns[pos].1 |= a.needs_moments();
            self.aggregate_input.push(pos);
        }
        self.aggregates_schema = aggregated_schema(&aggregates);
        self.aggregates = aggregates;
    }

    /// The aggregates computed as readings arrive.
    pub fn aggregates(&self) -> &[AggSpec] {
        &self.aggregates
    }

    /// Whether windows keep rows, and which columns they carry.
    pub fn row_columns(&self) -> Option<&[usize]> {
        self.keep_rows.then_some(&self.columns[..])
    }

    fn set_columns(&mut self, columns: impl IntoIterator<Item = usize>) {
        let width = telemetry_schema().fields().len();
        let mut columns: Vec<usize> = columns.into_iter().filter(|&c| c < width).collect();
        columns.sort_unstable();
        columns.dedup();
        let mut projection = columns.clone();
        projection.extend([width, width + 1]);
        self.closed_schema = Arc::new(windowed_schema().project(&projection).expect("indices are in range"));
        self.columns = columns;
    }

    /// The window spec.
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Motors seen.
    pub fn motor_count(&self) -> usize {
        self.motors.len()
    }

    /// Counters so far.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            windows_open: self.motors.iter().map(|m| m.open.len() as u64).sum(),
            batches_held: self.arena.live() as u64,
            ..self.stats
        }
    }

    /// Adds a batch of readings (in [`telemetry_schema`]) that arrived at processing time
    /// `now_ms`, and returns the windows this closes.
    pub fn push(&mut self, batch: &RecordBatch, now_ms: i64) -> Result<Closed, StreamError> {
        check_schema(batch)?;
        if batch.num_rows() == 0 {
            return Ok(Closed::none());
        }
        let motors = column::<StringArray>(batch, TelemetryColumn::MotorId)?;
        let sites = column::<StringArray>(batch, TelemetryColumn::SiteId)?;
        let times = column::<TimestampMillisecondArray>(batch, TelemetryColumn::Ts)?;
        let inputs: Vec<AggInput> = self
            .aggregated_columns
            .iter()
            .map(|&(c, moments)| {
                let values = batch.column(c).as_any().downcast_ref::<Float64Array>().ok_or_else(|| StreamError::Schema(format!("column {c} is not Float64")))?;
                Ok(AggInput { values, moments })
            })
            .collect::<Result<_, StreamError>>()?;
        let slot = self.arena.insert(batch.clone());
        let mut runs = std::mem::take(&mut self.runs);
        let (offsets, id_bytes) = (motors.value_offsets(), motors.value_data());
        let mut touched: Vec<usize> = Vec::new();
        let mut refs = 0;
        let late_before = self.late.len();
        runs.group(0..batch.num_rows(), self.motors.len(), |row| {
            let motor = motors.value(row);
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            self.motor(short_key_in(id_bytes, start, end - start, motor), motor, sites.value(row))
        });
        // Tumbling windows fold whole runs of a motor's readings: they read the aggregated
        // columns gathered into grouped order, sequentially, instead of scattered over the batch.
        let grouped_columns = if matches!(self.spec, WindowSpec::Tumbling { .. }) && !inputs.is_empty() {
            let order = UInt32Array::from(runs.rows.clone());
            inputs.iter().map(|input| take(input.values, &order, None)).collect::<Result<Vec<ArrayRef>, _>>()?
        } else {
            Vec::new()
        };
        let grouped: Vec<AggInput> = grouped_columns.iter().zip(&inputs).map(|(values, input)| AggInput { values: values.as_primitive(), moments: input.moments }).collect();
        let pushed = Pushed { slot, times: times.values(), now_ms, inputs: &inputs, grouped: &grouped };
        for (idx, first, rows) in runs.iter() {
            let (readings, windows) = self.add_run(idx, rows, first, &pushed);
            refs += rows.len() - readings + if self.keep_rows { windows } else { 0 };
            self.stats.rows_in += readings as u64;
            self.stats.rows_late += (rows.len() - readings) as u64;
            let counts = &mut self.motors[idx].counts;
            counts[0] += readings as u64;
            counts[1] += (rows.len() - readings) as u64;
            if readings > 0 {
                touched.push(idx);
            }
        }
        self.runs = runs;
        // Late readings leave in arrival order, as they came.
        self.late[late_before..].sort_unstable();
        self.arena.add_refs(slot, refs);
        self.arena.release_if_unused(slot);
        touched.sort_unstable();
        self.close(touched.into_iter(), now_ms, false)
    }

    /// Closes the windows of motors idle at processing time `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Result<Closed, StreamError> {
        let idle: Vec<usize> = (0..self.motors.len())
            .filter(|&i| !self.motors[i].open.is_empty() && self.motors[i].watermark.is_idle(now_ms, &self.policy))
            .collect();
        self.close(idle.into_iter(), now_ms, true)
    }

    /// End of input: closes every open window now (as a bounded source's final watermark does).
    pub fn close_all(&mut self, now_ms: i64) -> Result<Closed, StreamError> {
        let open: Vec<usize> = (0..self.motors.len()).filter(|&i| !self.motors[i].open.is_empty()).collect();
        self.close(open.into_iter(), now_ms, true)
    }

    /// Takes the late readings gathered so far, in [`telemetry_schema`].
    pub fn take_late(&mut self) -> Result<Option<RecordBatch>, StreamError> {
        if self.late.is_empty() {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.late);
        let batch = self.arena.gather(&rows)?;
        self.arena.release_rows(&rows);
        Ok(Some(batch))
    }

    /// The operator's state for a checkpoint, of the motors `include` accepts: each one's
    /// watermark and emitted-through mark, its open windows with their running statistics,
    /// and (when rows are kept) the open windows' rows. Late readings must have been taken
    /// ([`Self::take_late`]) first.
    pub(crate) fn snapshot(&self, include: &dyn Fn(&str) -> bool) -> Result<OperatorState, StreamError> {
        if !self.late.is_empty() {
            return Err(StreamError::Checkpoint("late readings not yet taken".into()));
        }
        let mut rows: Vec<RowRef> = Vec::new();
        let motors = self
            .motors
            .iter()
            .filter(|m| include(&m.id))
            .map(|m| MotorState {
                id: m.id.to_string(),
                site: m.site.to_string(),
                watermark: m.watermark,
                emitted_through_ms: m.emitted_through_ms,
                typical_rows: m.typical_rows as u64,
                counts: m.counts,
                windows: m
                    .open
                    .iter()
                    .map(|(&start_ms, w)| {
                        rows.extend_from_slice(&w.rows);
                        WindowState { start_ms, end_ms: w.end_ms, last_event_ms: w.last_event_ms, count: w.count, rows: w.rows.len() as u64, stats: w.stats.clone() }
                    })
                    .collect(),
            })
            .collect();
        let rows = if rows.is_empty() { None } else { Some(self.arena.gather(&rows)?) };
        let s = self.stats;
        Ok(OperatorState {
            spec: crate::engine::describe(&self.spec),
            outputs: self.outputs_fingerprint(),
            counters: [s.rows_in, s.rows_late, s.windows_closed, s.windows_closed_idle],
            motors,
            rows: checkpoint::batch_to_ipc(rows.as_ref())?,
        })
    }

    /// Restores [`Self::snapshot`]'s state into this operator, which must be fresh (no input
    /// yet) and configured for the same spec and outputs; the operator's counters come back too.
    pub(crate) fn restore(&mut self, state: OperatorState) -> Result<(), StreamError> {
        if self.has_input() || !self.motors.is_empty() {
            return Err(StreamError::Checkpoint("restoring into a window operator that already has input".into()));
        }
        let [rows_in, rows_late, windows_closed, windows_closed_idle] = state.counters;
        self.merge(state)?;
        self.stats = WindowStats { rows_in, rows_late, windows_closed, windows_closed_idle, ..WindowStats::default() };
        Ok(())
    }

    /// Adds [`Self::snapshot`]'s motors to this running operator (a partition handed over
    /// from another node), replacing any state it holds for them. The operator's own counters
    /// are left alone: they count what this operator did.
    pub(crate) fn merge(&mut self, state: OperatorState) -> Result<(), StreamError> {
        let spec = crate::engine::describe(&self.spec);
        if state.spec != spec || state.outputs != self.outputs_fingerprint() {
            return Err(StreamError::Checkpoint(format!(
                "window state of {} ({}) does not fit this operator ({spec}, {})",
                state.spec,
                state.outputs,
                self.outputs_fingerprint()
            )));
        }
        let rows = checkpoint::batch_from_ipc(&state.rows)?;
        let total: u64 = state.motors.iter().flat_map(|m| &m.windows).map(|w| w.rows).sum();
        if rows.as_ref().map_or(0, |b| b.num_rows() as u64) != total || (total > 0 && !self.keep_rows) {
            return Err(StreamError::Checkpoint(format!("window state names {total} buffered rows; the checkpoint holds {}", rows.as_ref().map_or(0, |b| b.num_rows()))));
        }
        if let Some(m) = state.motors.iter().find(|m| m.windows.iter().any(|w| w.stats.len() != self.aggregated_columns.len())) {
            return Err(StreamError::Checkpoint(format!("a window of motor {} has the wrong number of column statistics (expected {})", m.id, self.aggregated_columns.len())));
        }
        let incoming: HashSet<&str> = state.motors.iter().map(|m| m.id.as_str()).collect();
        self.drop_motors(&|id| incoming.contains(id));
        let slot = match rows {
            Some(batch) => {
                check_schema(&batch)?;
                let slot = self.arena.insert(batch);
                self.arena.add_refs(slot, total as usize);
                slot
            }
            None => 0,
        };
        let mut next_row = 0u32;
        for m in state.motors {
            let idx = self.motor(short_key(&m.id), &m.id, &m.site);
            let motor = &mut self.motors[idx];
            motor.watermark = m.watermark;
            motor.emitted_through_ms = m.emitted_through_ms;
            motor.typical_rows = m.typical_rows as usize;
            motor.counts = m.counts;
            for w in m.windows {
                let rows = (next_row..next_row + w.rows as u32).map(|r| (slot, r)).collect();
                next_row += w.rows as u32;
                motor.open.insert(w.start_ms, OpenWindow { end_ms: w.end_ms, last_event_ms: w.last_event_ms, rows, count: w.count, stats: w.stats });
            }
        }
        Ok(())
    }

    /// Forgets the motors `drop` accepts (their partition moved to another node): their open
    /// windows' rows are released and their watermarks gone. Returns how many were dropped.
    pub(crate) fn drop_motors(&mut self, drop: &dyn Fn(&str) -> bool) -> usize {
        let before = self.motors.len();
        let mut kept = Vec::with_capacity(before);
        for m in std::mem::take(&mut self.motors) {
            if drop(&m.id) {
                for (_, w) in m.open.iter() {
                    self.arena.release_rows(&w.rows);
                }
            } else {
                kept.push(m);
            }
        }
        self.motors = kept;
        if self.motors.len() != before {
            self.motor_index.clear();
            self.long_motor_index.clear();
            for (i, m) in self.motors.iter().enumerate() {
                match short_key(&m.id) {
                    Some(k) => self.motor_index.insert(k, i),
                    None => self.long_motor_index.insert(m.id.clone(), i),
                };
            }
        }
        before - self.motors.len()
    }

    /// The ids of the motors the operator holds state for.
    pub(crate) fn motor_ids(&self) -> impl Iterator<Item = &str> {
        self.motors.iter().map(|m| &*m.id)
    }

    /// What closed windows carry, as text: a checkpoint restores only into an operator with
    /// the same outputs.
    fn outputs_fingerprint(&self) -> String {
        let aggregates: Vec<String> = self.aggregates.iter().map(|a| a.name()).collect();
        format!("rows {:?}, aggregates [{}]", self.row_columns(), aggregates.join(", "))
    }

    /// The index of `motor` (whose [`short_key`] is `key`), added on first sight.
    #[inline]
    fn motor(&mut self, key: Option<u128>, motor: &str, site: &str) -> usize {
        let found = match key {
            Some(k) => self.motor_index.get(&k),
            None => self.long_motor_index.get(motor),
        };
        if let Some(&i) = found {
            return i;
        }
        let id: Arc<str> = Arc::from(motor);
        self.motors.push(MotorWindows { id: id.clone(), site: Arc::from(site), emitted_through_ms: i64::MIN, ..Default::default() });
        let i = self.motors.len() - 1;
        match key {
            Some(k) => self.motor_index.insert(k, i),
            None => self.long_motor_index.insert(id, i),
        };
        i
    }

    /// Adds one motor's readings of a batch (`rows`, in arrival order) to its windows; late ones
    /// go to the late path. Returns how many readings joined a window, and how many windows
    /// they joined in all (a hopping window's reading joins several).
    fn add_run(&mut self, idx: usize, rows: &[u32], first: usize, pushed: &Pushed) -> (usize, usize) {
        let Pushed { slot, times, now_ms, inputs, grouped } = *pushed;
        let WindowSpec::Tumbling { size_ms } = self.spec else {
            let (mut readings, mut windows) = (0, 0);
            for &row in rows {
                match self.add(idx, times[row as usize], now_ms, (slot, row), inputs) {
                    0 => self.late.push((slot, row)),
                    n => (readings, windows) = (readings + 1, windows + n),
                }
            }
            return (readings, windows);
        };
        // Tumbling windows, the common case: consecutive readings of a motor mostly fall into
        // the same window, so the window found for one serves the next while it fits.
        let keep_rows = self.keep_rows;
        let MotorWindows { watermark, emitted_through_ms, open, typical_rows, .. } = &mut self.motors[idx];
        let (mut current, mut current_start, mut current_end) = (usize::MAX, i64::MAX, i64::MIN);
        // The on-time readings for the current window not yet folded in (row numbers, and
        // positions in `grouped`), and their newest time.
        let (mut run, mut positions) = (std::mem::take(&mut self.run_rows), std::mem::take(&mut self.run_positions));
        let mut newest_ms = i64::MIN;
        let mut readings = 0;
        for (i, &row) in rows.iter().enumerate() {
            let ts = times[row as usize];
            if !watermark.observe(ts, now_ms, &self.policy) {
                self.late.push((slot, row));
                continue;
            }
            if ts < current_start || ts >= current_end {
                let start_ms = ts - ts.rem_euclid(size_ms);
                let end_ms = start_ms + size_ms;
                if end_ms <= *emitted_through_ms {
                    self.late.push((slot, row));
                    continue;
                }
                if !run.is_empty() {
                    open.0[current].1.fold_run(slot, &run, &positions, newest_ms, keep_rows, grouped);
                    (readings, newest_ms) = (readings + run.len(), i64::MIN);
                    run.clear();
                    positions.clear();
                }
                current = open.position_or_open(start_ms, || OpenWindow::new(end_ms, *typical_rows, inputs.len()));
                (current_start, current_end) = (start_ms, end_ms);
            }
            run.push(row);
            positions.push((first + i) as u32);
            newest_ms = newest_ms.max(ts);
        }
        if !run.is_empty() {
            open.0[current].1.fold_run(slot, &run, &positions, newest_ms, keep_rows, grouped);
            readings += run.len();
            run.clear();
            positions.clear();
        }
        (self.run_rows, self.run_positions) = (run, positions);
        (readings, readings)
    }

    /// Adds one reading to its motor's windows; returns how many windows it joined (0: it is
    /// late). The caller counts the batch references.
    fn add(&mut self, idx: usize, ts: i64, now_ms: i64, r: RowRef, inputs: &[AggInput]) -> usize {
        let keep_rows = self.keep_rows;
        let m = &mut self.motors[idx];
        if !m.watermark.observe(ts, now_ms, &self.policy) {
            return 0;
        }
        match self.spec {
            WindowSpec::Session { gap_ms } => {
                if ts < m.emitted_through_ms {
                    return 0;
                }
                // Merge every session the new reading touches: [ts, ts + gap) overlaps [start, end).
                let touching: Vec<i64> = m
                    .open
                    .starting_before(ts.saturating_add(gap_ms))
                    .filter(|(_, w)| w.end_ms > ts)
                    .map(|(s, _)| *s)
                    .collect();
                let mut merged = OpenWindow::new(ts + gap_ms, 1, 0);
                merged.fold(r, ts, true, &[]);
                let mut start = ts;
                for s in touching {
                    let w = m.open.remove(&s).expect("session exists");
                    start = start.min(s);
                    merged.last_event_ms = merged.last_event_ms.max(w.last_event_ms);
                    merged.end_ms = merged.end_ms.max(w.end_ms);
                    merged.rows.extend(w.rows);
                    merged.count += w.count;
                }
                m.open.insert(start, merged);
                1
            }
            WindowSpec::Tumbling { size_ms } => {
                // The common case, without the general path's allocation.
                let start_ms = ts - ts.rem_euclid(size_ms);
                let end_ms = start_ms + size_ms;
                if end_ms <= m.emitted_through_ms {
                    return 0;
                }
                let typical_rows = m.typical_rows;
                let w = m.open.get_or_open(start_ms, || OpenWindow::new(end_ms, typical_rows, inputs.len()));
                w.fold(r, ts, keep_rows, inputs);
                1
            }
            spec => {
                let windows = spec.windows_of(ts);
                if windows.first().is_none_or(|w| w.end_ms <= m.emitted_through_ms) {
                    return 0;
                }
                for Window { start_ms, end_ms } in &windows {
                    let typical_rows = m.typical_rows;
                    let w = m.open.get_or_open(*start_ms, || OpenWindow::new(*end_ms, typical_rows, inputs.len()));
                    w.fold(r, ts, keep_rows, inputs);
                }
                windows.len()
            }
        }
    }

    /// Emits the closable windows of the given motors (every open one if `idle`).
    fn close(&mut self, motors: impl Iterator<Item = usize>, now_ms: i64, idle: bool) -> Result<Closed, StreamError> {
        let mut rows: Vec<RowRef> = Vec::new();
        let mut bounds: Vec<ClosedWindow> = Vec::new();
        let mut sites = HashMap::new();
        for idx in motors {
            let m = &mut self.motors[idx];
            let closable: Vec<i64> = m
                .open
                .iter()
                .filter(|(_, w)| idle || m.watermark.closes(&Window { start_ms: 0, end_ms: w.end_ms }, now_ms, &self.policy))
                .map(|(s, _)| *s)
                .collect();
            for start in closable {
                let w = m.open.remove(&start).expect("open window");
                m.emitted_through_ms = m.emitted_through_ms.max(w.end_ms);
                m.typical_rows = w.rows.len();
                m.counts[2] += 1;
                bounds.push(ClosedWindow { motor: idx, start_ms: start, end_ms: w.end_ms, rows: w.rows.len(), count: w.count, stats: w.stats });
                sites.entry(m.id.to_string()).or_insert_with(|| m.site.to_string());
                rows.extend_from_slice(&w.rows);
                if idle {
                    self.stats.windows_closed_idle += 1;
                }
            }
        }
        if bounds.is_empty() {
            return Ok(Closed::none());
        }
        self.stats.windows_closed += bounds.len() as u64;
        let windows = if self.keep_rows { Some(self.raw_windows(&bounds, &rows)?) } else { None };
        self.arena.release_rows(&rows);
        let aggregates = if self.aggregates.is_empty() { None } else { Some(self.aggregated_windows(&bounds)?) };
        Ok(Closed { windows, aggregates, count: bounds.len(), sites })
    }

    /// The closed windows' rows (`rows`, in window order) in the closed-window schema.
    fn raw_windows(&self, bounds: &[ClosedWindow], rows: &[RowRef]) -> Result<RecordBatch, StreamError> {
        let per_row = |w: &ClosedWindow| w.rows;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 2);
        let (batches, picks) = self.arena.picks(rows);
        for &c in &self.columns {
            let column = if c == TelemetryColumn::MotorId as usize {
                repeat_text(bounds, per_row, |w| &self.motors[w.motor].id)
            } else if c == TelemetryColumn::SiteId as usize {
                repeat_text(bounds, per_row, |w| &self.motors[w.motor].site)
            } else {
                Arena::gather_column(&batches, &picks, c)?
            };
            columns.push(column);
        }
        columns.extend(window_bounds(bounds, per_row));
        Ok(RecordBatch::try_new(self.closed_schema.clone(), columns)?)
    }

    /// One row per closed window: keys, then each aggregate's value.
    fn aggregated_windows(&self, bounds: &[ClosedWindow]) -> Result<RecordBatch, StreamError> {
        let once = |_: &ClosedWindow| 1;
        let mut columns: Vec<ArrayRef> = vec![
            repeat_text(bounds, once, |w| &self.motors[w.motor].id),
            repeat_text(bounds, once, |w| &self.motors[w.motor].site),
        ];
        columns.extend(window_bounds(bounds, once));
        for (spec, &input) in self.aggregates.iter().zip(&self.aggregate_input) {
            let column: ArrayRef = match spec.kind {
                AggKind::CountRows => Arc::new(Int64Array::from_iter_values(bounds.iter().map(|w| w.count as i64))),
                AggKind::Count => Arc::new(Int64Array::from_iter_values(bounds.iter().map(|w| w.stats[input].count as i64))),
                kind => Arc::new(bounds.iter().map(|w| w.stats[input].f64_value(kind)).collect::<Float64Array>()),
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(self.aggregates_schema.clone(), columns)?)
    }
}

/// A window operator's checkpointed state (see [`WindowOperator::snapshot`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OperatorState {
    /// The window spec, as text.
    spec: String,
    /// What the operator's closed windows carry (row columns and aggregates), as text.
    outputs: String,
    /// rows_in, rows_late, windows_closed, windows_closed_idle.
    counters: [u64; 4],
    motors: Vec<MotorState>,
    /// The open windows' rows, motor by motor and window by window, as Arrow IPC.
    rows: Vec<u8>,
}

impl OperatorState {
    /// The state's content independent of processing time and of the order motors were first
    /// seen in (what two runs over the same input agree on): motors sorted by id, watermarks
    /// as newest event times, open windows with their counts and statistics (not their raw
    /// rows' layout), and each motor's reading and window counters. Appended to `out` as bytes.
    pub(crate) fn canonical_into(&self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let mut motors: Vec<&MotorState> = self.motors.iter().collect();
        motors.sort_by(|a, b| a.id.cmp(&b.id));
        let motors: Vec<_> = motors
            .iter()
            .map(|m| {
                let windows: Vec<_> = m.windows.iter().map(|w| (w.start_ms, w.end_ms, w.last_event_ms, w.count, w.rows, &w.stats)).collect();
                (&m.id, &m.site, m.watermark.newest_event_ms(), m.emitted_through_ms, m.counts, windows)
            })
            .collect();
        out.extend(checkpoint::to_bytes(&(&self.spec, &self.outputs, motors))?);
        Ok(())
    }

    /// Readings that joined a window, over the life of the motors in this state (restored
    /// across restarts, and moved with a motor's partition).
    pub(crate) fn rows_in(&self) -> u64 {
        self.motors.iter().map(|m| m.counts[0]).sum()
    }

    /// The ids of the motors in this state.
    pub(crate) fn motor_ids(&self) -> impl Iterator<Item = &str> {
        self.motors.iter().map(|m| m.id.as_str())
    }

    /// Motors in this state.
    pub(crate) fn motor_count(&self) -> usize {
        self.motors.len()
    }

    /// Open windows in this state.
    pub(crate) fn open_windows(&self) -> usize {
        self.motors.iter().map(|m| m.windows.len()).sum()
    }
}

/// One motor's checkpointed windows.
#[derive(Debug, Serialize, Deserialize)]
struct MotorState {
    id: String,
    site: String,
    watermark: MotorWatermark,
    emitted_through_ms: i64,
    typical_rows: u64,
    /// Readings that joined a window, readings sent late, windows emitted.
    counts: [u64; 3],
    windows: Vec<WindowState>,
}

/// One open window, checkpointed; its `rows` are the next ones in [`OperatorState::rows`].
#[derive(Debug, Serialize, Deserialize)]
struct WindowState {
    start_ms: i64,
    end_ms: i64,
    last_event_ms: i64,
    count: u64,
    rows: u64,
    stats: Vec<ColumnStats>,
}

/// A window being emitted: its motor, bounds, buffered rows, reading count and statistics.
struct ClosedWindow {
    motor: usize,
    start_ms: i64,
    end_ms: i64,
    rows: usize,
    count: u64,
    stats: Vec<ColumnStats>,
}

/// `window_start` and `window_end` columns, each window's bounds repeated `repeat(window)` times.
fn window_bounds(windows: &[ClosedWindow], repeat: impl Fn(&ClosedWindow) -> usize) -> [ArrayRef; 2] {
    let total = windows.iter().map(&repeat).sum();
    let mut starts = Vec::with_capacity(total);
    let mut ends = Vec::with_capacity(total);
    for w in windows {
        starts.extend(std::iter::repeat_n(w.start_ms, repeat(w)));
        ends.extend(std::iter::repeat_n(w.end_ms, repeat(w)));
    }
    [
        Arc::new(TimestampMillisecondArray::from(starts).with_timezone("UTC")),
        Arc::new(TimestampMillisecondArray::from(ends).with_timezone("UTC")),
    ]
}

/// A text column holding each window's value (its motor's id or site) `repeat(window)` times.
fn repeat_text<'v>(windows: &[ClosedWindow], repeat: impl Fn(&ClosedWindow) -> usize, value: impl Fn(&ClosedWindow) -> &'v str) -> ArrayRef {
    let rows = windows.iter().map(&repeat).sum();
    let bytes = windows.iter().map(|w| repeat(w) * value(w).len()).sum();
    let mut builder = StringBuilder::with_capacity(rows, bytes);
    for w in windows {
        let v = value(w);
        for _ in 0..repeat(w) {
            builder.append_value(v);
        }
    }
    Arc::new(builder.finish())
}

fn check_schema(batch: &RecordBatch) -> Result<(), StreamError> {
    let expected = telemetry_schema();
    if batch.schema().fields() != expected.fields() {
        return Err(StreamError::Schema(format!(
            "a telemetry batch must have the telemetry schema; got columns {:?}",
            batch.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

fn column<T: 'static>(batch: &RecordBatch, c: TelemetryColumn) -> Result<&T, StreamError> {
    batch
        .column(c as usize)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| StreamError::Schema(format!("column {} has an unexpected type", c as usize)))
}

/// Sequence numbers of a batch's rows (for tests and diagnostics).
pub fn sequences(batch: &RecordBatch) -> Vec<u64> {
    batch
        .column(TelemetryColumn::Seq as usize)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .map(|a| a.values().to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_read_in_place_match_the_copied_ones() {
        let ids = ["", "M", "M0001", "motor-0000001", "fifteen-bytes-x", "sixteen-bytes-xx", "M1\0", "M1"];
        let column = StringArray::from(ids.to_vec());
        let (offsets, data) = (column.value_offsets(), column.value_data());
        let mut keys = Vec::new();
        for (row, id) in ids.iter().enumerate() {
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            let in_place = short_key_in(data, start, end - start, id);
            assert_eq!(in_place, short_key(id), "{id:?} (the last rows take the copying path)");
            assert_eq!(in_place.is_none(), id.len() >= 16, "{id:?}");
            keys.push(in_place);
        }
        let distinct: std::collections::HashSet<_> = keys.iter().flatten().collect();
        assert_eq!(distinct.len(), ids.len() - 1, "every short id has its own key, \"M1\" and \"M1\\0\" too");
    }

    #[test]
    fn runs_group_rows_by_motor_in_arrival_order() {
        let mut runs = MotorRuns::default();
        let motors = [2, 0, 2, 5, 0, 2];
        runs.group(0..motors.len(), 3, |row| motors[row]);
        let groups: Vec<(usize, Vec<u32>)> = runs.iter().map(|(m, _, rows)| (m, rows.to_vec())).collect();
        assert_eq!(groups, [(2, vec![0, 2, 5]), (0, vec![1, 4]), (5, vec![3])]);
        // The scratch is reset for the next batch.
        runs.group(4..6, 6, |row| [0, 0, 0, 0, 5, 5][row]);
        let groups: Vec<(usize, Vec<u32>)> = runs.iter().map(|(m, _, rows)| (m, rows.to_vec())).collect();
        assert_eq!(groups, [(5, vec![4, 5])], "row numbers are the batch's");
        runs.group(0..0, 6, |_| unreachable!());
        assert_eq!(runs.iter().count(), 0);
    }
}
