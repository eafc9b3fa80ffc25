//! Bounded in-memory tables the engine writes and users query: `alerts`, `motor_windows`,
//! `late_events` and `telemetry` (the newest raw readings) (and, replaced before each run, a
//! continuous query's window relation). Each keeps its newest rows up to a row limit; older
//! batches are dropped whole (the Kafka topics are the durable record). A node drops the rows
//! of motors whose partition moved to another node ([`BoundedTable::drop_motors`]), so a
//! table holds only what its node answers for.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// A one-partition in-memory scan of `batches`.
///
/// The batches may hold other columns than the table's (a window relation carries only the
/// columns its queries read; a pre-aggregated one, the aggregates of all the queries on those
/// windows); the projection, which names the table's columns, is then mapped onto theirs by
/// name, and asking for a column they lack is an error.
pub(crate) fn memory_scan(
    batches: Vec<RecordBatch>,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(stored) = batches.first().map(|b| b.schema()).filter(|s| s.fields() != schema.fields()) else {
        let exec = MemorySourceConfig::try_new_exec(&[batches], schema.clone(), projection.cloned())?;
        return Ok(exec as Arc<dyn ExecutionPlan>);
    };
    let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
    let positions = wanted
        .iter()
        .map(|&i| {
            let name = schema.field(i).name();
            stored
                .index_of(name)
                .map_err(|_| DataFusionError::Internal(format!("column {name} was not materialised for this scan")))
        })
        .collect::<Result<Vec<usize>>>()?;
    let projected = batches.iter().map(|b| b.project(&positions)).collect::<std::result::Result<Vec<_>, _>>()?;
    let exec = MemorySourceConfig::try_new_exec(&[projected], Arc::new(schema.project(&wanted)?), None)?;
    Ok(exec as Arc<dyn ExecutionPlan>)
}

/// A batch of fewer rows than this is small...
const SMALL_ROWS: usize = 1024;
/// ...and this many small batches at the end of a table are merged into one. Sensors that
/// report every few minutes make batches of a few rows, each of which costs a few kilobytes
/// of array structures that [`RecordBatch::get_array_memory_size`] does not count: 100,000
/// rows of `telemetry` took about 30 MB more than their bound in batches of 17.
const MERGE_AFTER: usize = 32;

/// Merges the small batches at the end of `batches` into one once there are
/// [`MERGE_AFTER`] of them, keeping `bytes` (their memory size) right. A row is copied a few
/// times at most: a merged batch stops being small after a few merges.
fn merge_small_tail(schema: &SchemaRef, batches: &mut VecDeque<RecordBatch>, bytes: &mut usize) {
    let small = batches.iter().rev().take_while(|b| b.num_rows() < SMALL_ROWS).count();
    if small < MERGE_AFTER {
        return;
    }
    let tail: Vec<RecordBatch> = batches.drain(batches.len() - small..).collect();
    match datafusion::arrow::compute::concat_batches(schema, &tail) {
        Ok(merged) => {
            *bytes = *bytes - tail.iter().map(RecordBatch::get_array_memory_size).sum::<usize>()
                + merged.get_array_memory_size();
            batches.push_back(merged);
        }
        Err(e) => {
            tracing::error!(error = %e, "merging a table's small batches; they stay as they are");
            batches.extend(tail);
        }
    }
}

/// An append-only table that keeps its newest `max_rows` rows.
#[derive(Debug)]
pub struct BoundedTable {
    schema: SchemaRef,
    max_rows: usize,
    max_bytes: usize,
    /// The batches, their rows and their bytes.
    batches: RwLock<(VecDeque<RecordBatch>, usize, usize)>,
}

impl BoundedTable {
    /// An empty table.
    pub fn new(schema: SchemaRef, max_rows: usize) -> Arc<Self> {
        Self::with_max_bytes(schema, max_rows, usize::MAX)
    }

    /// An empty table that also drops its oldest batches beyond `max_bytes` (as Arrow holds
    /// them in memory).
    pub fn with_max_bytes(schema: SchemaRef, max_rows: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Self { schema, max_rows, max_bytes, batches: RwLock::new((VecDeque::new(), 0, 0)) })
    }

    /// Appends a batch (which must have the table's schema), dropping the oldest batches
    /// beyond the row or byte limit.
    pub fn append(&self, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        debug_assert_eq!(batch.schema().fields(), self.schema.fields());
        let mut guard = self.batches.write().unwrap_or_else(|e| e.into_inner());
        let (batches, rows, bytes) = &mut *guard;
        *rows += batch.num_rows();
        *bytes += batch.get_array_memory_size();
        batches.push_back(batch);
        merge_small_tail(&self.schema, batches, bytes);
        while (*rows > self.max_rows || *bytes > self.max_bytes) && batches.len() > 1 {
            let old = batches.pop_front().expect("non-empty");
            *rows -= old.num_rows();
            *bytes -= old.get_array_memory_size();
        }
    }

    /// Replaces the whole content (a continuous query's input: the windows that just closed).
    pub fn replace(&self, batches: Vec<RecordBatch>) {
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let bytes = batches.iter().map(|b| b.get_array_memory_size()).sum();
        *self.batches.write().unwrap_or_else(|e| e.into_inner()) = (batches.into(), rows, bytes);
    }

    /// Drops the rows whose `motor_id` `drop` accepts (their partition moved to another
    /// node); returns how many. A table without a text `motor_id` column keeps everything.
    pub fn drop_motors(&self, drop: &dyn Fn(&str) -> bool) -> usize {
        let Ok(column) = self.schema.index_of("motor_id") else { return 0 };
        let mut guard = self.batches.write().unwrap_or_else(|e| e.into_inner());
        let (batches, rows, bytes) = &mut *guard;
        let mut dropped = 0;
        for batch in batches.iter_mut() {
            let Some(motors) = batch.column(column).as_string_opt::<i32>() else { return dropped };
            let keep: BooleanArray = motors.iter().map(|m| Some(!m.is_some_and(drop))).collect();
            let kept = keep.true_count();
            if kept == batch.num_rows() {
                continue;
            }
            match filter_record_batch(batch, &keep) {
                Ok(filtered) => {
                    dropped += batch.num_rows() - kept;
                    *rows -= batch.num_rows() - kept;
                    *bytes = bytes.saturating_sub(batch.get_array_memory_size()) + filtered.get_array_memory_size();
                    *batch = filtered;
                }
                Err(e) => tracing::error!(error = %e, "dropping moved motors' rows"),
            }
        }
        batches.retain(|b| b.num_rows() > 0);
        dropped
    }

    /// Rows held now.
    pub fn num_rows(&self) -> usize {
        self.batches.read().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Bytes held now, as Arrow holds them in memory.
    pub fn num_bytes(&self) -> usize {
        self.batches.read().unwrap_or_else(|e| e.into_inner()).2
    }

    fn snapshot(&self) -> Vec<RecordBatch> {
        self.batches.read().unwrap_or_else(|e| e.into_inner()).0.iter().cloned().collect()
    }
}

#[async_trait]
impl TableProvider for BoundedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        memory_scan(self.snapshot(), &self.schema, projection)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn small_batches_are_merged_in_order_and_their_bytes_kept_right() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let table = BoundedTable::with_max_bytes(schema.clone(), 1_000_000, usize::MAX);
        for i in 0..100i64 {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec!["M1", "M2", "M3"])),
                    Arc::new(Int64Array::from(vec![3 * i, 3 * i + 1, 3 * i + 2])),
                ],
            )
            .unwrap();
            table.append(batch);
        }
        let kept = table.snapshot();
        assert!(kept.len() < MERGE_AFTER, "{} batches kept for 100 appended", kept.len());
        assert_eq!(table.num_rows(), 300);
        assert_eq!(table.num_bytes(), kept.iter().map(RecordBatch::get_array_memory_size).sum::<usize>());
        let numbers: Vec<i64> = kept
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<datafusion::arrow::datatypes::Int64Type>().values().to_vec())
            .collect();
        assert_eq!(numbers, (0..300).collect::<Vec<_>>(), "every row, in order");
    }
}
