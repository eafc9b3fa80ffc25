//! The telemetry Arrow schema: the column layout of every batch the ingest builds and every
//! table that holds raw readings.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::Channel;

/// Column positions in [`telemetry_schema`], so that readers need no name look-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryColumn {
    /// `motor_id`, Utf8, not null.
    MotorId = 0,
    /// `site_id`, Utf8, not null.
    SiteId = 1,
    /// `ts`, Timestamp(ms, UTC), not null: the event time.
    Ts = 2,
    /// `seq`, UInt64, not null: the per-motor sequence number.
    Seq = 3,
    /// The first of the seven nullable Float64 channel columns, in [`Channel::ALL`] order.
    FirstChannel = 4,
    /// `extra`, Map<Utf8, Float64>, not null (possibly empty).
    Extra = 11,
}

/// The telemetry schema, built once.
///
/// | column | type | null |
/// |---|---|---|
/// | motor_id | Utf8 | no |
/// | site_id | Utf8 | no |
/// | ts | Timestamp(Millisecond, "UTC") | no |
/// | seq | UInt64 | no |
/// | current_a, voltage_v, temperature_c, vibration_x_rms, vibration_y_rms, vibration_z_rms, speed_rpm | Float64 | yes |
/// | extra | Map<Utf8, Float64> | no (empty map) |
pub fn telemetry_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new("motor_id", DataType::Utf8, false),
                Field::new("site_id", DataType::Utf8, false),
                Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
                Field::new("seq", DataType::UInt64, false),
            ];
            fields.extend(Channel::ALL.iter().map(|c| Field::new(c.name(), DataType::Float64, true)));
            fields.push(Field::new("extra", extra_map_type(), false));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// The type of the `extra` column, as arrow's `MapBuilder` builds it by default.
fn extra_map_type() -> DataType {
    let entries =
        Fields::from(vec![Field::new("keys", DataType::Utf8, false), Field::new("values", DataType::Float64, true)]);
    DataType::Map(Arc::new(Field::new("entries", DataType::Struct(entries), false)), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_positions_match_names() {
        let schema = telemetry_schema();
        assert_eq!(schema.field(TelemetryColumn::MotorId as usize).name(), "motor_id");
        assert_eq!(schema.field(TelemetryColumn::Seq as usize).name(), "seq");
        for (i, c) in Channel::ALL.iter().enumerate() {
            assert_eq!(schema.field(TelemetryColumn::FirstChannel as usize + i).name(), c.name());
        }
        assert_eq!(schema.field(TelemetryColumn::Extra as usize).name(), "extra");
        assert_eq!(schema.fields().len(), 12);
    }
}
