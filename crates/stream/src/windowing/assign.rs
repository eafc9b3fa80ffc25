//! How readings join their windows: [`WindowOperator::add_run`] folds a motor's run of a
//! batch (tumbling windows, the common case, window by window), [`WindowOperator::add`] one
//! reading at a time (hopping windows, which a reading joins several of, and sessions, which
//! merge).

use tessera_core::{Window, WindowSpec};

use super::WindowOperator;
use super::open::{AggInput, MotorWindows, OpenWindow, RowRef};

/// The batch being pushed, as [`WindowOperator::add_run`] reads it.
#[derive(Clone, Copy)]
pub(super) struct Pushed<'a> {
    pub(super) slot: u32,
    pub(super) times: &'a [i64],
    pub(super) now_ms: i64,
    /// The aggregated columns, by row number.
    pub(super) inputs: &'a [AggInput<'a>],
    /// The same, gathered into grouped order ([`super::motors::MotorRuns::rows`]); tumbling windows only.
    pub(super) grouped: &'a [AggInput<'a>],
}

impl WindowOperator {
    /// Adds one motor's readings of a batch (`rows`, in arrival order) to its windows; late ones
    /// go to the late path. Returns how many readings joined a window, and how many windows
    /// they joined in all (a hopping window's reading joins several).
    pub(super) fn add_run(&mut self, idx: usize, rows: &[u32], first: usize, pushed: &Pushed) -> (usize, usize) {
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
}
