//! The Arrow shapes the stage's modules share: the time type, the closed-window relation
//! ([`windowed_schema`]), the pre-aggregated one ([`aggregated_schema`]), and typed access to a
//! telemetry batch's columns.
//!
//! The window operator produces these relations and the queries read them, so they live below
//! both: [`crate::windowing`], [`crate::preagg`], [`crate::query`] and [`crate::alerts`] import
//! them from here rather than from each other.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use tessera_core::{Channel, TelemetryColumn, telemetry_schema};

use crate::StreamError;
use crate::aggregate::{AggKind, AggSpec};

/// Timestamp(ms, UTC), the type of every time column.
pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

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

/// The key columns of the pre-aggregated relation, before the aggregate columns.
pub const KEY_COLUMNS: [&str; 4] = ["motor_id", "site_id", "window_start", "window_end"];

/// The pre-aggregated relation's schema for `specs`: the key columns, then one column per spec
/// (named [`AggSpec::name`]).
pub fn aggregated_schema(specs: &[AggSpec]) -> SchemaRef {
    let mut fields = vec![
        Field::new(KEY_COLUMNS[0], DataType::Utf8, false),
        Field::new(KEY_COLUMNS[1], DataType::Utf8, false),
        Field::new(KEY_COLUMNS[2], ts_type(), false),
        Field::new(KEY_COLUMNS[3], ts_type(), false),
    ];
    fields.extend(
        specs
            .iter()
            .map(|s| Field::new(s.name(), s.data_type(), !matches!(s.kind, AggKind::CountRows | AggKind::Count))),
    );
    Arc::new(Schema::new(fields))
}

/// Checks that `batch` has the telemetry schema's columns.
pub(crate) fn check_telemetry(batch: &RecordBatch) -> Result<(), StreamError> {
    let expected = telemetry_schema();
    if batch.schema().fields() != expected.fields() {
        return Err(StreamError::Schema(format!(
            "a telemetry batch must have the telemetry schema; got columns {:?}",
            batch.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// Column `c` of a telemetry batch, as the array type it must have.
pub(crate) fn column<T: 'static>(batch: &RecordBatch, c: TelemetryColumn) -> Result<&T, StreamError> {
    batch
        .column(c as usize)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| StreamError::Schema(format!("column {} has an unexpected type", c as usize)))
}

/// A telemetry batch's motor, site and event-time columns, found by name; `None` if it lacks
/// one (the judges beside the queries then take nothing from it).
pub(crate) fn keys(batch: &RecordBatch) -> Option<(&StringArray, &StringArray, &TimestampMillisecondArray)> {
    let text = |name: &str| batch.column_by_name(name)?.as_any().downcast_ref::<StringArray>();
    let ts = batch.column_by_name("ts")?.as_any().downcast_ref::<TimestampMillisecondArray>()?;
    Some((text("motor_id")?, text("site_id")?, ts))
}

/// A telemetry batch's column of channel `c`, found by name, if it has one.
pub(crate) fn channel_values(batch: &RecordBatch, c: Channel) -> Option<&Float64Array> {
    batch.column_by_name(c.name())?.as_any().downcast_ref::<Float64Array>()
}

/// A telemetry batch's `extra` map column: per row, named measurements beyond the channels.
pub(crate) fn extras(
    batch: &RecordBatch,
) -> Option<(&datafusion::arrow::array::MapArray, &StringArray, &Float64Array)> {
    let map = batch.column_by_name("extra")?.as_any().downcast_ref::<datafusion::arrow::array::MapArray>()?;
    let keys = map.keys().as_any().downcast_ref::<StringArray>()?;
    let values = map.values().as_any().downcast_ref::<Float64Array>()?;
    Some((map, keys, values))
}
