//! A motor's open windows: each one's buffered row positions and running statistics, and the
//! sorted set a motor keeps them in.

use std::sync::Arc;

use datafusion::arrow::array::Float64Array;
use tessera_core::MotorWatermark;

use crate::aggregate::ColumnStats;

/// Where a buffered reading is: (batch slot, row).
pub(super) type RowRef = (u32, u32);

/// An open window's readings.
#[derive(Debug, Default)]
pub(super) struct OpenWindow {
    pub(super) end_ms: i64,
    /// Newest event time inside (sessions grow from it).
    pub(super) last_event_ms: i64,
    pub(super) rows: Vec<RowRef>,
    /// Readings in the window.
    pub(super) count: u64,
    /// Running statistics of the aggregated columns (see [`super::WindowOperator::set_outputs`]).
    pub(super) stats: Vec<ColumnStats>,
}

impl OpenWindow {
    pub(super) fn new(end_ms: i64, capacity: usize, aggregated_columns: usize) -> Self {
        Self {
            end_ms,
            last_event_ms: i64::MIN,
            rows: Vec::with_capacity(capacity),
            count: 0,
            stats: vec![ColumnStats::default(); aggregated_columns],
        }
    }

    /// Adds a reading: its position if rows are kept, its values to the running statistics.
    #[inline]
    pub(super) fn fold(&mut self, r: RowRef, ts: i64, keep_rows: bool, inputs: &[AggInput]) {
        self.fold_run(r.0, &[r.1], &[r.1], ts, keep_rows, inputs);
    }

    /// Adds readings `rows` of batch `slot` (in arrival order; `newest_ms` their newest event
    /// time), one column at a time; their values are at `positions` of `inputs`.
    #[inline]
    pub(super) fn fold_run(
        &mut self,
        slot: u32,
        rows: &[u32],
        positions: &[u32],
        newest_ms: i64,
        keep_rows: bool,
        inputs: &[AggInput],
    ) {
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
pub(super) struct OpenWindows(pub(super) Vec<(i64, OpenWindow)>);

impl OpenWindows {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&i64, &OpenWindow)> {
        self.0.iter().map(|(s, w)| (s, w))
    }

    /// Windows starting before `start_ms`.
    pub(super) fn starting_before(&self, start_ms: i64) -> impl Iterator<Item = (&i64, &OpenWindow)> {
        self.iter().take_while(move |(s, _)| **s < start_ms)
    }

    pub(super) fn remove(&mut self, start_ms: &i64) -> Option<OpenWindow> {
        let i = self.0.binary_search_by_key(start_ms, |(s, _)| *s).ok()?;
        Some(self.0.remove(i).1)
    }

    pub(super) fn insert(&mut self, start_ms: i64, window: OpenWindow) {
        match self.0.binary_search_by_key(&start_ms, |(s, _)| *s) {
            Ok(i) => self.0[i].1 = window,
            Err(i) => self.insert_at(i, start_ms, window),
        }
    }

    /// A new window at `i`, the vector grown by one rather than doubled: most motors have one
    /// window open at a time, and a doubled vector held four (320 bytes a motor).
    fn insert_at(&mut self, i: usize, start_ms: i64, window: OpenWindow) {
        if self.0.len() == self.0.capacity() {
            self.0.reserve_exact(1);
        }
        self.0.insert(i, (start_ms, window));
    }

    /// The position of the window starting at `start_ms`, opened with `open` if missing.
    #[inline]
    pub(super) fn position_or_open(&mut self, start_ms: i64, open: impl FnOnce() -> OpenWindow) -> usize {
        match self.0.last() {
            Some((s, _)) if *s == start_ms => self.0.len() - 1,
            _ => match self.0.binary_search_by_key(&start_ms, |(s, _)| *s) {
                Ok(i) => i,
                Err(i) => {
                    self.insert_at(i, start_ms, open());
                    i
                }
            },
        }
    }

    /// The window starting at `start_ms`, opened with `open` if missing.
    #[inline]
    pub(super) fn get_or_open(&mut self, start_ms: i64, open: impl FnOnce() -> OpenWindow) -> &mut OpenWindow {
        let i = self.position_or_open(start_ms, open);
        &mut self.0[i].1
    }
}

/// A column the operator aggregates, in the batch being pushed.
pub(super) struct AggInput<'a> {
    pub(super) values: &'a Float64Array,
    pub(super) moments: bool,
}

/// One motor's windows.
#[derive(Debug, Default)]
pub(super) struct MotorWindows {
    /// The motor id and its site (from its first reading).
    pub(super) id: Arc<str>,
    pub(super) site: Arc<str>,
    pub(super) watermark: MotorWatermark,
    /// Windows ending at or before this were emitted.
    pub(super) emitted_through_ms: i64,
    /// Open windows by start.
    pub(super) open: OpenWindows,
    /// Rows in the motor's last emitted window: a new window's buffer starts at this size.
    pub(super) typical_rows: usize,
    /// The motor's own counters, checkpointed with it (they move with the motor when its
    /// partition moves): readings that joined a window, readings sent late, windows emitted.
    pub(super) counts: [u64; 3],
}
