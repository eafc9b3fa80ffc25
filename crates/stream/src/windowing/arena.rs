//! The ingest batches the open windows and late rows point into, counted so that a batch is
//! dropped once nothing points into it.

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::{interleave, interleave_record_batch};
use tessera_core::telemetry_schema;

use super::open::RowRef;
use crate::StreamError;

/// Batches in use, with how many buffered rows point into each.
#[derive(Debug, Default)]
pub(super) struct Arena {
    slots: Vec<Option<(RecordBatch, usize)>>,
    free: Vec<u32>,
}

impl Arena {
    pub(super) fn insert(&mut self, batch: RecordBatch) -> u32 {
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

    pub(super) fn add_refs(&mut self, slot: u32, count: usize) {
        if let Some((_, n)) = &mut self.slots[slot as usize] {
            *n += count;
        }
    }

    pub(super) fn release(&mut self, slot: u32, count: usize) {
        if let Some((_, n)) = &mut self.slots[slot as usize] {
            *n -= count;
            if *n == 0 {
                self.slots[slot as usize] = None;
                self.free.push(slot);
            }
        }
    }

    /// Drops a slot nothing points into (a batch whose rows were all late or invalid).
    pub(super) fn release_if_unused(&mut self, slot: u32) {
        if matches!(self.slots[slot as usize], Some((_, 0))) {
            self.slots[slot as usize] = None;
            self.free.push(slot);
        }
    }

    /// Releases the references of gathered rows (runs of one slot at a time).
    pub(super) fn release_rows(&mut self, rows: &[RowRef]) {
        for run in rows.chunk_by(|a, b| a.0 == b.0) {
            self.release(run[0].0, run.len());
        }
    }

    /// The batches `rows` point into, and each row as (index into those batches, row).
    pub(super) fn picks(&self, rows: &[RowRef]) -> (Vec<&RecordBatch>, Vec<(usize, usize)>) {
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
    pub(super) fn gather(&self, rows: &[RowRef]) -> Result<RecordBatch, StreamError> {
        let (batches, picks) = self.picks(rows);
        if batches.is_empty() {
            return Ok(RecordBatch::new_empty(telemetry_schema()));
        }
        Ok(interleave_record_batch(&batches, &picks)?)
    }

    /// Gathers one column of rows, in the given order.
    pub(super) fn gather_column(
        batches: &[&RecordBatch],
        picks: &[(usize, usize)],
        column: usize,
    ) -> Result<ArrayRef, StreamError> {
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(column).as_ref()).collect();
        Ok(interleave(&arrays, picks)?)
    }

    pub(super) fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}
