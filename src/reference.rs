//! The peers' reference query as a Tessera continuous query, and what the benches read back
//! from an engine that ran it; shared by `benches/stream_zscore.rs` and `benches/kafka_peers.rs`.

use anyhow::Result;
use datafusion::arrow::array::{Array, Int64Array};
use tessera_stream::StreamEngine;

/// The reference query (../shared/bench): per motor and 10 s tumbling window, count, mean and
/// sample stddev of vibration and current, max temperature; `score` is the window's vibration
/// mean against the motor's previous 30 windows (NULL until it has 30).
pub const QUERY: &str = "CREATE CONTINUOUS QUERY zscore WITH (open_above = 3, close_below = 3) AS
  SELECT motor_id, window_start, count(*) AS n,
         avg(vibration_x_rms) AS vib_avg, stddev_samp(vibration_x_rms) AS vib_std,
         avg(current_a) AS cur_avg, stddev_samp(current_a) AS cur_std, max(temperature_c) AS temp_max,
         zscore(motor_id, window_start, avg(vibration_x_rms), 30) AS score
  FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds')
  GROUP BY motor_id, window_start";

/// Windows the query emitted, and how many of them have z > 3.
pub async fn count_hits(engine: &StreamEngine) -> Result<(i64, i64)> {
    let b =
        engine.sql("SELECT count(*) AS windows, count(*) FILTER (WHERE score > 3) AS hits FROM motor_windows").await?;
    let col = |i: usize| b[0].column(i).as_any().downcast_ref::<Int64Array>().expect("count").value(0);
    Ok((col(0), col(1)))
}

/// CPU time of this process so far (user + system, every thread), by getrusage.
pub fn process_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage of this process");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}
