-- Alerts with hysteresis: open after 2 windows at z ≥ 3, critical at z ≥ 6, close after 2 windows below 1.
CREATE CONTINUOUS QUERY vib WITH (open_above = 3, close_below = 1, critical_above = 6, open_windows = 2, close_windows = 2) AS
  SELECT motor_id, window_start, avg(vibration_x_rms) AS vib,
         zscore(motor_id, window_start, avg(vibration_x_rms), 4, 3) AS score
  FROM TUMBLE(telemetry, ts, INTERVAL '1 second')
  GROUP BY motor_id, window_start;
-- A 4-window baseline around 1.0, then a step to 1.3 (z ≈ 3.7, gated out of the baseline), a spike that makes it critical, and back.
PUSH AT 1000 (motor_id, ts, vibration_x_rms) VALUES ('M1', 0, 1.0), ('M1', 1000, 1.1), ('M1', 2000, 0.9), ('M1', 3000, 1.0), ('M1', 4000, 1.3);
PUSH AT 2000 (motor_id, ts, vibration_x_rms) VALUES ('M1', 5000, 1.3), ('M1', 6000, 1.3);
PUSH AT 3000 (motor_id, ts, vibration_x_rms) VALUES ('M1', 7000, 3.0);
PUSH AT 4000 (motor_id, ts, vibration_x_rms) VALUES ('M1', 8000, 1.05), ('M1', 9000, 1.5), ('M1', 10000, 1.0), ('M1', 11000, 0.95), ('M1', 12000, 1.0);
SELECT alert_id, state, severity, round(score, 3) AS score, round(peak_score, 3) AS peak, window_start, opened_window_start FROM alerts ORDER BY emitted_at, window_start;
SELECT state, count(*) AS n FROM alerts GROUP BY state ORDER BY state;
