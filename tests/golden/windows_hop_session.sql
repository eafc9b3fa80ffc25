-- Hopping windows and session windows (gaps), side by side on the same readings.
SET allowed_lateness = 10000;
SET idle_timeout = 60000;
CREATE CONTINUOUS QUERY hops AS
  SELECT motor_id, window_start, window_end, count(*) AS n, sum(current_a) AS total
  FROM HOP(telemetry, ts, INTERVAL '5 seconds', INTERVAL '10 seconds')
  GROUP BY motor_id, window_start, window_end;
CREATE CONTINUOUS QUERY sessions AS
  SELECT motor_id, window_start, window_end, count(*) AS n, sum(current_a) AS total
  FROM SESSION(telemetry, ts, INTERVAL '5 seconds')
  GROUP BY motor_id, window_start, window_end;
-- Two bursts, 0–4 s and 12–13 s, for M1; M2 has one burst.
PUSH AT 1000 (motor_id, ts, current_a) VALUES ('M1', 0, 1.0), ('M1', 2000, 2.0), ('M1', 4000, 3.0), ('M1', 12000, 4.0), ('M1', 13000, 5.0), ('M2', 1000, 10.0);
-- A reading at 8 s arrives late but within the lateness: it bridges the gap, merging the two sessions into one.
PUSH AT 2000 (motor_id, ts, current_a) VALUES ('M1', 8000, 6.0);
-- Move the watermarks past everything.
PUSH AT 3000 (motor_id, ts, current_a) VALUES ('M1', 40000, 0.0), ('M2', 40000, 0.0);
SELECT query, motor_id, window_start, window_end, features['n'] AS n, features['total'] AS total FROM motor_windows WHERE query = 'hops' ORDER BY motor_id, window_start;
SELECT motor_id, window_start, window_end, features['n'] AS n, features['total'] AS total FROM motor_windows WHERE query = 'sessions' ORDER BY motor_id, window_start;
