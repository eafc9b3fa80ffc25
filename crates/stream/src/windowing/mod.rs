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
//! ([`crate::aggregate`]; [`crate::preagg`] finds the queries that can use them) as it
//! arrives; when no query needs the rows themselves, the operator then keeps no rows at all,
//! only a few numbers per open window.
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
//!
//! The parts: `open` (a motor's open windows), `motors` (motor keys, a batch grouped by
//! motor), `arena` (the batches rows point into), `assign` (readings into windows), `close`
//! (windows out as batches), `state` (checkpoints and partition handover).

mod arena;
mod assign;
mod close;
mod motors;
mod open;
mod state;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::SchemaRef;
use tessera_core::{TelemetryColumn, WatermarkPolicy, WindowSpec, telemetry_schema};

use crate::StreamError;
use crate::aggregate::{AggKind, AggSpec};
use crate::schema::{aggregated_schema, check_telemetry, column, windowed_schema};
use arena::Arena;
use assign::Pushed;
use motors::{MotorRuns, short_key_in};
use open::{AggInput, MotorWindows, RowRef};
pub(crate) use state::OperatorState;

/// A window spec as text, e.g. `tumble 10000 ms`.
pub fn describe(spec: &WindowSpec) -> String {
    match *spec {
        WindowSpec::Tumbling { size_ms } => format!("tumble {size_ms} ms"),
        WindowSpec::Hopping { size_ms, slide_ms } => format!("hop {size_ms} ms every {slide_ms} ms"),
        WindowSpec::Session { gap_ms } => format!("session gap {gap_ms} ms"),
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
    /// The same for ids too long for [`motors::short_key`].
    long_motor_index: HashMap<Arc<str>, usize, foldhash::fast::FixedState>,
    motors: Vec<MotorWindows>,
    arena: Arena,
    late: Vec<RowRef>,
    stats: WindowStats,
    /// Scratch for grouping each batch by motor.
    runs: MotorRuns,
    /// The motors of the last pushed batch (indices into `motors`), for [`Self::last_pushed`].
    last_pushed: Vec<usize>,
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

/// What one step closed.
#[derive(Debug)]
pub struct Closed {
    /// The rows of every window that closed, in [`windowed_schema`] projected to the operator's
    /// columns ([`WindowOperator::set_outputs`]), grouped by motor and window; `None` if none
    /// closed or rows are not kept.
    pub windows: Option<RecordBatch>,
    /// One row per closed window with its aggregates ([`aggregated_schema`]);
    /// `None` if none closed or no aggregates are computed.
    pub aggregates: Option<RecordBatch>,
    /// How many windows closed.
    pub count: usize,
    /// Motor id → site of the motors whose windows closed (shared with the operator's own).
    pub sites: MotorSites,
}

/// Motor id → site, keyed by the operator's shared ids (no copy per closed window).
pub type MotorSites = HashMap<Arc<str>, Arc<str>, foldhash::fast::FixedState>;

impl Closed {
    fn none() -> Self {
        Self { windows: None, aggregates: None, count: 0, sites: MotorSites::default() }
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
            last_pushed: Vec::new(),
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
        check_telemetry(batch)?;
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
                let values = batch
                    .column(c)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .ok_or_else(|| StreamError::Schema(format!("column {c} is not Float64")))?;
                Ok(AggInput { values, moments })
            })
            .collect::<Result<_, StreamError>>()?;
        let slot = self.arena.insert(batch.clone());
        let mut runs = std::mem::take(&mut self.runs);
        let (offsets, id_bytes) = (motors.value_offsets(), motors.value_data());
        let mut touched: Vec<usize> = Vec::new();
        let mut refs = 0;
        let late_before = self.late.len();
        self.last_pushed.clear();
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
        let grouped: Vec<AggInput> = grouped_columns
            .iter()
            .zip(&inputs)
            .map(|(values, input)| AggInput { values: values.as_primitive(), moments: input.moments })
            .collect();
        let pushed = Pushed { slot, times: times.values(), now_ms, inputs: &inputs, grouped: &grouped };
        for (idx, first, rows) in runs.iter() {
            self.last_pushed.push(idx);
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

    /// The motors of the last pushed batch, once each: id, site and the newest event time
    /// read from it so far (late readings included). The engine's health board reads this
    /// rather than looking every reading's motor up again.
    pub fn last_pushed(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.last_pushed.iter().filter_map(|&idx| {
            let m = &self.motors[idx];
            m.watermark.newest_event_ms().map(|newest| (&*m.id, &*m.site, newest))
        })
    }

    /// Closes the windows of motors idle at processing time `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Result<Closed, StreamError> {
        let policy = self.policy;
        let idle: Vec<usize> = (self.motors.iter_mut().enumerate())
            .filter_map(|(i, m)| {
                // A restored motor's silence counts from here (one pass with the idle check).
                m.watermark.start_idle_clock(now_ms);
                (!m.open.is_empty() && m.watermark.is_idle(now_ms, &policy)).then_some(i)
            })
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

    /// The index of `motor` (whose [`motors::short_key`] is `key`), added on first sight.
    #[inline]
    fn motor(&mut self, key: Option<u128>, motor: &str, site: &str) -> usize {
        let found = match key {
            Some(k) => self.motor_index.get(&k),
            None => self.long_motor_index.get(motor),
        };
        if let Some(&i) = found {
            return i;
        }
        let id = crate::ids::shared(motor);
        if self.motors.len() == self.motors.capacity() {
            // By an eighth, not double: at 100,000 motors a doubled table leaves a third of
            // its 128-byte rows unused.
            self.motors.reserve_exact((self.motors.len() / 8).max(16));
        }
        self.motors.push(MotorWindows {
            id: id.clone(),
            site: crate::ids::shared(site),
            emitted_through_ms: i64::MIN,
            ..Default::default()
        });
        let i = self.motors.len() - 1;
        match key {
            Some(k) => self.motor_index.insert(k, i),
            None => self.long_motor_index.insert(id, i),
        };
        i
    }
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
