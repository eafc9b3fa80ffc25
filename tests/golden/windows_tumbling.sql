-- Tumbling windows: out-of-order and late readings, an idle motor, a motor with a fast clock.
SET allowed_lateness = 2000;
SET idle_timeout = 30000;
CREATE CONTINUOUS QUERY counts AS
  SELECT motor_id, window_start, window_end, count(*) AS n, avg(vibration_x_rms) AS vib
  FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds')
  GROUP BY motor_id, window_start, window_end;
-- M1 in order; M2 out of order (9500 after 11000 is within the 2 s lateness); M3 once.
PUSH AT 1000 (motor_id, ts, vibration_x_rms) VALUES ('M1', 1000, 1.0), ('M1', 9000, 3.0), ('M2', 5000, 10.0), ('M2', 11000, 20.0), ('M2', 9500, 30.0), ('M3', 3000, 7.0);
-- M1's watermark reaches 10000: its first window closes. M2's reaches 10500: its first closes.
PUSH AT 2000 (motor_id, ts, vibration_x_rms) VALUES ('M1', 12000, 5.0), ('M2', 12500, 40.0);
-- 8000 is behind M2's watermark (10500): late, counted, kept in late_events, in no window.
PUSH AT 3000 (motor_id, ts, vibration_x_rms) VALUES ('M2', 8000, 99.0);
-- M4's clock runs 1000 s ahead: it closes only its own windows.
PUSH AT 4000 (motor_id, ts, vibration_x_rms) VALUES ('M4', 1000000, 1.0), ('M4', 1015000, 2.0);
-- M1, M2 and M4 keep talking; M3 has been silent since 1000.
PUSH AT 35000 (motor_id, ts, vibration_x_rms) VALUES ('M1', 13000, 6.0), ('M2', 13000, 50.0), ('M4', 1016000, 3.0);
-- 30 s after M3's last reading: its window closes on the idle timeout, nobody else's does.
TICK AT 40000;
SELECT motor_id, window_start, window_end, features['n'] AS n, features['vib'] AS vib FROM motor_windows ORDER BY motor_id, window_start;
SELECT motor_id, ts, vibration_x_rms, late_for FROM late_events;
