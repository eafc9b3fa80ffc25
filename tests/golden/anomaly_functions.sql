-- Every anomaly function on hand-checkable values: one reading per 1 s window.
-- current_a: 1, 2, 3, 5, 3, 4; temperature_c: 0, 2, 0, 2, 3, 1 (M1). M2 gets other values: its state is its own.
CREATE CONTINUOUS QUERY fns AS
  SELECT motor_id, window_start,
         avg(current_a) AS x,
         zscore(motor_id, window_start, avg(current_a), 3) AS z,
         ewma_dev(motor_id, window_start, avg(current_a), 0.5) AS ewma,
         cusum(motor_id, window_start, avg(current_a), 3, 0.5) AS cusum,
         spike(motor_id, window_start, avg(current_a), 3) AS spike,
         trend_slope(motor_id, window_start, avg(current_a), 3) AS slope,
         time_to_threshold(motor_id, window_start, avg(current_a), 3, 20) AS ttt,
         hotelling_t2(motor_id, window_start, make_array(avg(current_a), avg(temperature_c)), 4) AS t2
  FROM TUMBLE(telemetry, ts, INTERVAL '1 second')
  GROUP BY motor_id, window_start;
PUSH AT 1000 (motor_id, ts, current_a, temperature_c) VALUES ('M1', 0, 1.0, 0.0), ('M1', 1000, 2.0, 2.0), ('M1', 2000, 3.0, 0.0), ('M2', 0, 100.0, 1.0), ('M2', 1000, 100.0, 1.0);
PUSH AT 2000 (motor_id, ts, current_a, temperature_c) VALUES ('M1', 3000, 5.0, 2.0), ('M1', 4000, 3.0, 3.0), ('M1', 5000, 4.0, 1.0), ('M1', 6000, 4.0, 1.0), ('M2', 2000, 100.0, 1.0), ('M2', 3000, 100.0, 1.0), ('M2', 4000, 130.0, 1.0);
-- Move both watermarks on, closing the last windows above. M2's baseline is constant (std 0): its z stays NULL.
PUSH AT 3000 (motor_id, ts, current_a, temperature_c) VALUES ('M1', 9000, 0.0, 0.0), ('M2', 9000, 0.0, 0.0);
SELECT motor_id, window_start, features['x'] AS x, features['z'] AS z, features['ewma'] AS ewma, features['cusum'] AS cusum, features['spike'] AS spike, features['slope'] AS slope, features['ttt'] AS ttt, features['t2'] AS t2 FROM motor_windows ORDER BY motor_id, window_start;
-- Mistakes are rejected at registration, with DataFusion's message where it is DataFusion's.
CREATE CONTINUOUS QUERY bad_n AS SELECT motor_id, window_start, zscore(motor_id, window_start, avg(current_a), 1) AS z FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start;
CREATE CONTINUOUS QUERY bad_param AS SELECT motor_id, window_start, zscore(motor_id, window_start, avg(current_a), max(current_a)) AS z FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start;
CREATE CONTINUOUS QUERY bad_column AS SELECT motor_id, window_start, avg(vibration) AS v FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start;
CREATE CONTINUOUS QUERY bad_key AS SELECT motor_id, window_start, ewma_dev(avg(current_a), window_start, avg(current_a), 0.5) AS e FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start;
CREATE CONTINUOUS QUERY no_window_start AS SELECT motor_id, avg(current_a) AS a FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id;
CREATE CONTINUOUS QUERY fns AS SELECT motor_id, window_start FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start;
