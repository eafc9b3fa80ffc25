//! What the engine's tests share: a query with anomaly scores and alerts, readings of three
//! motors, and engines to run them on.

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tessera_core::WatermarkPolicy;

use super::{StreamConfig, StreamEngine};
use crate::conform;

pub(super) const QUERY: &str =
    "CREATE CONTINUOUS QUERY q WITH (open_above = 3, close_below = 1.5, open_windows = 2, close_windows = 2) AS
      SELECT motor_id, window_start, avg(current_a) AS a,
             greatest(abs(zscore(motor_id, window_start, avg(current_a), 10, 5)),
                      abs(zscore(motor_id, window_start, avg(temperature_c), 10, 5))) AS score
      FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start";

/// Three motors, 1 reading/s for 600 s, interleaved by time; a step in motor m1.
pub(super) fn readings() -> RecordBatch {
    let (mut motors, mut ts, mut cur, mut temp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in 0..600i64 {
        for (m, name) in ["m0", "m1", "m2"].iter().enumerate() {
            let noise = (((t * 7919 + m as i64 * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.4;
            let step = if *name == "m1" && (300..400).contains(&t) { 3.0 } else { 0.0 };
            motors.push(*name);
            ts.push(1_700_000_000_000 + t * 1000 + m as i64 * 37);
            cur.push(10.0 + noise + step);
            temp.push(50.0 + noise * 2.0);
        }
    }
    let schema = Schema::new(vec![
        Field::new("motor_id", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("current_a", DataType::Float64, true),
        Field::new("temperature_c", DataType::Float64, true),
    ]);
    let b = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(motors)),
            Arc::new(Int64Array::from(ts)),
            Arc::new(Float64Array::from(cur)),
            Arc::new(Float64Array::from(temp)),
        ],
    )
    .unwrap();
    conform::to_telemetry(&b, &[], 0).unwrap()
}

/// Four motors that report every 2 minutes, each at its own phase (30 s apart), for `steps`
/// steps: one batch per reading, in time order. Motor m1's current steps up by 3 A from step
/// 150 (the shift judge's alert), m2's temperature climbs from step 100 (the wear judge's
/// rise).
pub(super) fn slow_readings(steps: i64) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("motor_id", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("current_a", DataType::Float64, true),
        Field::new("temperature_c", DataType::Float64, true),
    ]));
    let mut out = Vec::new();
    for step in 0..steps {
        for m in 0..4i64 {
            let noise = (((step * 7919 + m * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.4;
            let current = 10.0 + noise + if m == 1 && step >= 150 { 3.0 } else { 0.0 };
            let temperature = 50.0 + noise + if m == 2 && step >= 100 { 0.2 * (step - 100) as f64 } else { 0.0 };
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec![format!("m{m}")])),
                    Arc::new(Int64Array::from(vec![1_700_000_000_000 + step * 120_000 + m * 30_000])),
                    Arc::new(Float64Array::from(vec![current])),
                    Arc::new(Float64Array::from(vec![temperature])),
                ],
            )
            .unwrap();
            out.push(conform::to_telemetry(&b, &[], (step * 4 + m) as u64).unwrap());
        }
    }
    out
}

/// An engine with 1 s of allowed lateness and an idle timeout the tests never reach.
pub(super) fn engine() -> StreamEngine {
    StreamEngine::new(StreamConfig {
        watermark: WatermarkPolicy { allowed_lateness_ms: 1_000, idle_timeout_ms: 3_600_000 },
        table_rows: 100_000,
        table_bytes: usize::MAX,
        telemetry_rows: 0,
        quality: None,
        wear: None,
        shift: None,
    })
}

/// [`engine`] with `queries` registered.
pub(super) async fn engine_with(queries: &[String]) -> StreamEngine {
    let mut engine = engine();
    for q in queries {
        engine.register(q).await.unwrap();
    }
    engine
}
