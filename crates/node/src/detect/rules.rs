//! The default rule set: the continuous queries a node runs when its config names none.
//! docs/DETECTION.md reports how they score on the labelled data and why they look like this.
//!
//! `motor_health`: every channel's 10 s mean (the seven telemetry channels and the SKAB-style
//! extras `pressure_bar`, `fluid_temperature_c`, `flow_rate_lpm` when a motor sends them) is
//! z-scored against the same motor's previous 50 windows (500 s). The gate (5) keeps anomalous
//! windows out of the baseline, so a fault that lasts minutes does not become the new normal.
//! The score is the largest |z| over the channels; an alert opens after 3 windows at ≥ 7 and
//! closes after 3 windows below 3. Nothing depends on the time since a motor's first reading:
//! the first 50 windows simply have no score. Only windows of at least 5 readings count (a
//! motor reporting every minute gets one reading per window, and a baseline of 50 readings
//! swinging with its shifts' load): slower motors are judged by the judges that size their
//! windows from each motor's own rate (`[detect.shift]`, `[detect.wear]`).

/// Default detection rules (`CREATE CONTINUOUS QUERY` statements).
pub const DEFAULT_RULES: &[&str] = &[r#"CREATE CONTINUOUS QUERY motor_health
  WITH (open_above = 7, close_below = 3, critical_above = 20, open_windows = 3, close_windows = 3) AS
SELECT motor_id, window_start, window_end, count(*) AS readings,
       avg(current_a) AS current_a, avg(voltage_v) AS voltage_v, avg(temperature_c) AS temperature_c, avg(vibration_x_rms) AS vibration_x_rms, avg(vibration_y_rms) AS vibration_y_rms, avg(vibration_z_rms) AS vibration_z_rms, avg(speed_rpm) AS speed_rpm, avg(extra['pressure_bar']) AS pressure_bar, avg(extra['fluid_temperature_c']) AS fluid_temperature_c, avg(extra['flow_rate_lpm']) AS flow_rate_lpm,
       greatest(abs(zscore(motor_id, window_start, avg(current_a), 50, 5)),
                     abs(zscore(motor_id, window_start, avg(voltage_v), 50, 5)),
                     abs(zscore(motor_id, window_start, avg(temperature_c), 50, 5)),
                     abs(zscore(motor_id, window_start, avg(vibration_x_rms), 50, 5)),
                     abs(zscore(motor_id, window_start, avg(vibration_y_rms), 50, 5)),
                     abs(zscore(motor_id, window_start, avg(vibration_z_rms), 50, 5)),
                     abs(zscore(motor_id, window_start, avg(speed_rpm), 50, 5)),
                     abs(zscore(motor_id, window_start, avg(extra['pressure_bar']), 50, 5)),
                     abs(zscore(motor_id, window_start, avg(extra['fluid_temperature_c']), 50, 5)),
                     abs(zscore(motor_id, window_start, avg(extra['flow_rate_lpm']), 50, 5))) AS score
FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds')
GROUP BY motor_id, window_start, window_end
HAVING count(*) >= 5"#];

/// The demo's rule: 5 s windows of each motor's aggregates and the time until its temperature
/// reaches 110 °C at its recent trend (`motor_health.time_to_threshold_s`), so a few minutes
/// of demo fill `motor_windows`. It raises no alert: the demo's alerts come from the judges,
/// with the shift judge sized for minutes of 1 Hz data
/// ([`super::ShiftConfig::demo`]). It had a score (each channel's z against 6 windows, open at
/// 12): a baseline of six windows alarmed on 14 healthy motors in 3 minutes
/// (docs/DETECTION.md).
pub const DEMO_RULES: &[&str] = &[r#"CREATE CONTINUOUS QUERY demo_windows AS
SELECT motor_id, window_start, window_end, count(*) AS readings,
       avg(current_a) AS current_a, max(current_a) AS current_max, avg(temperature_c) AS temperature_c,
       avg(vibration_x_rms) AS vibration_x_rms, avg(vibration_y_rms) AS vibration_y_rms,
       time_to_threshold(motor_id, window_start, avg(temperature_c), 6, 110) AS seconds_to_110c
FROM TUMBLE(telemetry, ts, INTERVAL '5 seconds')
GROUP BY motor_id, window_start, window_end"#];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_register() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut engine = tessera_stream::StreamEngine::new(Default::default());
        for sql in DEFAULT_RULES.iter().chain(DEMO_RULES) {
            rt.block_on(engine.register(sql)).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(engine.queries().count(), 2);
    }
}
