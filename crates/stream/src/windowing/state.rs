//! The operator's checkpointed state ([`OperatorState`]), and moving motors in and out: a
//! restore after a restart, or a partition handed over from or to another node.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tessera_core::MotorWatermark;

use super::motors::short_key;
use super::open::{OpenWindow, RowRef};
use super::{WindowOperator, WindowStats, describe};
use crate::StreamError;
use crate::aggregate::ColumnStats;
use crate::checkpoint;
use crate::schema::check_telemetry;

impl WindowOperator {
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
                        WindowState {
                            start_ms,
                            end_ms: w.end_ms,
                            last_event_ms: w.last_event_ms,
                            count: w.count,
                            rows: w.rows.len() as u64,
                            stats: w.stats.clone(),
                        }
                    })
                    .collect(),
            })
            .collect();
        let rows = if rows.is_empty() { None } else { Some(self.arena.gather(&rows)?) };
        let s = self.stats;
        Ok(OperatorState {
            spec: describe(&self.spec),
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
        let spec = describe(&self.spec);
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
            return Err(StreamError::Checkpoint(format!(
                "window state names {total} buffered rows; the checkpoint holds {}",
                rows.as_ref().map_or(0, |b| b.num_rows())
            )));
        }
        if let Some(m) =
            state.motors.iter().find(|m| m.windows.iter().any(|w| w.stats.len() != self.aggregated_columns.len()))
        {
            return Err(StreamError::Checkpoint(format!(
                "a window of motor {} has the wrong number of column statistics (expected {})",
                m.id,
                self.aggregated_columns.len()
            )));
        }
        let incoming: HashSet<&str> = state.motors.iter().map(|m| m.id.as_str()).collect();
        self.drop_motors(&|id| incoming.contains(id));
        let slot = match rows {
            Some(batch) => {
                check_telemetry(&batch)?;
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
            // Silence is measured from this process's first look, not the writer's last reading.
            motor.watermark.mark_resumed();
            motor.emitted_through_ms = m.emitted_through_ms;
            motor.typical_rows = m.typical_rows as usize;
            motor.counts = m.counts;
            for w in m.windows {
                let rows = (next_row..next_row + w.rows as u32).map(|r| (slot, r)).collect();
                next_row += w.rows as u32;
                motor.open.insert(
                    w.start_ms,
                    OpenWindow {
                        end_ms: w.end_ms,
                        last_event_ms: w.last_event_ms,
                        rows,
                        count: w.count,
                        stats: w.stats,
                    },
                );
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

    /// The motors the operator holds state for, with their sites.
    pub(crate) fn motor_sites(&self) -> impl Iterator<Item = (&str, &str)> {
        self.motors.iter().map(|m| (&*m.id, &*m.site))
    }

    /// What closed windows carry, as text: a checkpoint restores only into an operator with
    /// the same outputs.
    fn outputs_fingerprint(&self) -> String {
        let aggregates: Vec<String> = self.aggregates.iter().map(|a| a.name()).collect();
        format!("rows {:?}, aggregates [{}]", self.row_columns(), aggregates.join(", "))
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
                let windows: Vec<_> = m
                    .windows
                    .iter()
                    .map(|w| (w.start_ms, w.end_ms, w.last_event_ms, w.count, w.rows, &w.stats))
                    .collect();
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
