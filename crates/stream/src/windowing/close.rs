//! Emitting closed windows: their rows gathered into one batch in the closed-window schema,
//! or their running aggregates as one row per window.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringBuilder, TimestampMillisecondArray,
};
use tessera_core::{TelemetryColumn, Window};

use super::arena::Arena;
use super::open::RowRef;
use super::{Closed, MotorSites, WindowOperator};
use crate::StreamError;
use crate::aggregate::{AggKind, ColumnStats};

impl WindowOperator {
    /// Emits the closable windows of the given motors (every open one if `idle`).
    pub(super) fn close(
        &mut self,
        motors: impl Iterator<Item = usize>,
        now_ms: i64,
        idle: bool,
    ) -> Result<Closed, StreamError> {
        // Sized for a window per motor (the usual close), so neither grows while filling.
        let expected = motors.size_hint().0;
        let mut rows: Vec<RowRef> = Vec::new();
        let mut bounds: Vec<ClosedWindow> = Vec::with_capacity(expected);
        let mut sites = MotorSites::with_capacity_and_hasher(expected, Default::default());
        for idx in motors {
            let m = &mut self.motors[idx];
            let closable: Vec<i64> = m
                .open
                .iter()
                .filter(|(_, w)| {
                    idle || m.watermark.closes(&Window { start_ms: 0, end_ms: w.end_ms }, now_ms, &self.policy)
                })
                .map(|(s, _)| *s)
                .collect();
            if !closable.is_empty() {
                sites.entry(m.id.clone()).or_insert_with(|| m.site.clone());
            }
            for start in closable {
                let w = m.open.remove(&start).expect("open window");
                m.emitted_through_ms = m.emitted_through_ms.max(w.end_ms);
                m.typical_rows = w.rows.len();
                m.counts[2] += 1;
                bounds.push(ClosedWindow {
                    motor: idx,
                    start_ms: start,
                    end_ms: w.end_ms,
                    rows: w.rows.len(),
                    count: w.count,
                    stats: w.stats,
                });
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
                AggKind::Count => {
                    Arc::new(Int64Array::from_iter_values(bounds.iter().map(|w| w.stats[input].count as i64)))
                }
                kind => Arc::new(bounds.iter().map(|w| w.stats[input].f64_value(kind)).collect::<Float64Array>()),
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(self.aggregates_schema.clone(), columns)?)
    }
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
fn repeat_text<'v>(
    windows: &[ClosedWindow],
    repeat: impl Fn(&ClosedWindow) -> usize,
    value: impl Fn(&ClosedWindow) -> &'v str,
) -> ArrayRef {
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
