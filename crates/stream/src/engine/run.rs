//! Running a stage's queries on the windows that closed, and reading what they output.
//!
//! A run that fails (an error, or a panic some input triggers) is retried motor by motor, so
//! only the motors whose windows fail again are handed out ([`super::FailedRun`]) and one bad
//! window cannot crash-loop the node. Each output row becomes a [`WindowScore`]: a row of the
//! `motor_windows` table, and an observation for the query's alert tracker.

use datafusion::arrow::array::{
    Array, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::DataType;
use tessera_core::WindowSpec;

use super::{FailedRun, StepOutput, StreamEngine};
use crate::StreamError;
use crate::alerts::{MotorWindowsBuilder, WindowScore, alerts_batch};
use crate::query::{ContinuousQuery, OutputLayout};
use crate::windowing::Closed;

/// Polls a future, turning a panic inside it into an error with the panic's message.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => std::task::Poll::Ready(Err(panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into()))),
        }
    }
}

impl StreamEngine {
    /// Runs the stage's queries on the windows that closed: raw-row queries on their rows,
    /// pre-aggregated ones on their aggregates.
    pub(super) async fn run_stage(&mut self, stage: usize, closed: Closed, now_ms: i64, out: &mut StepOutput) {
        let spec = self.stages[stage].op.spec();
        let sites = &closed.sites;
        for q in &mut self.stages[stage].queries {
            let name = q.query.def().name.clone();
            let input = if q.query.aggregates().is_some() { &closed.aggregates } else { &closed.windows };
            let Some(input) = input else { continue };
            let batches = match guarded_run(&q.query, input).await {
                Ok(b) => b,
                Err(error) => {
                    // Isolate the culprit: run each motor's windows alone (a motor's anomaly
                    // state is its own, so this scores as the whole run would have); only the
                    // motors whose run fails again are handed out.
                    tracing::error!(query = %name, error = %error, windows = input.num_rows(), "continuous query failed; running its windows motor by motor");
                    let mut ok = Vec::new();
                    for part in split_by_motor(input) {
                        match guarded_run(&q.query, &part).await {
                            Ok(b) => ok.extend(b),
                            Err(error) => {
                                self.query_errors += 1;
                                tracing::error!(query = %name, error = %error, windows = part.num_rows(), "continuous query failed on a motor's windows; they are handed out");
                                out.failed.push(FailedRun {
                                    query: name.clone(),
                                    error: error.to_string(),
                                    windows: part,
                                });
                            }
                        }
                    }
                    ok
                }
            };
            let layout = q.query.layout().clone();
            let mut rows = MotorWindowsBuilder::default();
            let mut events = Vec::new();
            for batch in &batches {
                self.query_rows += batch.num_rows() as u64;
                match scores(batch, &layout, &spec, sites) {
                    Ok(mut scored) => {
                        scored
                            .sort_by(|a, b| a.motor_id.cmp(b.motor_id).then(a.window_start_ms.cmp(&b.window_start_ms)));
                        let open_above = q.query.def().alerts.as_ref().map(|o| o.open_above);
                        for w in scored {
                            rows.append(&name, &w);
                            self.health.window(&name, &w, open_above);
                            if let Some(t) = &mut q.tracker
                                && let Some(e) = t.observe(w, now_ms)
                            {
                                events.push(e);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(query = %name, error = %e, "unreadable query output");
                        self.query_errors += 1;
                    }
                }
            }
            let windows = rows.finish();
            if windows.num_rows() > 0 {
                self.motor_windows.append(windows.clone());
                out.window_rows.push(windows);
            }
            if !events.is_empty() {
                events.iter().for_each(|e| self.health.alert(e));
                let rows = alerts_batch(&events);
                self.alerts.append(rows.clone());
                out.alert_rows.push(rows);
                self.alert_events += events.len() as u64;
                out.alerts.extend(events);
            }
        }
    }
}

/// Why a guarded query run produced nothing.
#[derive(Debug, thiserror::Error)]
enum RunFailure {
    /// The run returned an error.
    #[error(transparent)]
    Failed(#[from] StreamError),
    /// The run panicked, with this message.
    #[error("panicked: {0}")]
    Panicked(String),
}

/// Runs a query over closed windows, catching an error or a panic.
async fn guarded_run(query: &ContinuousQuery, input: &RecordBatch) -> Result<Vec<RecordBatch>, RunFailure> {
    match CatchUnwind(Box::pin(query.run(input.clone()))).await {
        Ok(result) => Ok(result?),
        Err(panic) => Err(RunFailure::Panicked(panic)),
    }
}

/// Closed windows split by motor (first-seen order); the whole batch if it has no readable
/// `motor_id` column.
fn split_by_motor(windows: &RecordBatch) -> Vec<RecordBatch> {
    let Some(ids) = windows.column_by_name("motor_id").and_then(|c| c.as_any().downcast_ref::<StringArray>()) else {
        return vec![windows.clone()];
    };
    let mut motors: Vec<&str> = Vec::new();
    for id in ids.iter().flatten() {
        if !motors.contains(&id) {
            motors.push(id);
        }
    }
    motors
        .into_iter()
        .filter_map(|m| {
            let mask: BooleanArray = ids.iter().map(|id| Some(id == Some(m))).collect();
            filter_record_batch(windows, &mask).ok()
        })
        .collect()
}

/// Reads a query's output rows.
fn scores<'a>(
    batch: &'a RecordBatch,
    layout: &'a OutputLayout,
    spec: &WindowSpec,
    sites: &'a crate::windowing::MotorSites,
) -> Result<Vec<WindowScore<'a>>, StreamError> {
    let motors = cast(batch.column(layout.motor), &DataType::Utf8)?;
    let motors = motors.as_any().downcast_ref::<StringArray>().expect("cast to Utf8").clone();
    let ts = |i: usize| -> Result<TimestampMillisecondArray, StreamError> {
        let a = batch.column(i);
        a.as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .cloned()
            .ok_or_else(|| StreamError::Schema(format!("column {i} is not a millisecond timestamp")))
    };
    let starts = ts(layout.window_start)?;
    let ends = layout.window_end.map(ts).transpose()?;
    let as_f64 = |i: usize| -> Result<Float64Array, StreamError> {
        let a = cast(batch.column(i), &DataType::Float64)?;
        Ok(a.as_any().downcast_ref::<Float64Array>().expect("cast to Float64").clone())
    };
    let score = layout.score.map(as_f64).transpose()?;
    let mut features: Vec<(&'a str, Float64Array)> = layout
        .features
        .iter()
        .map(|&i| Ok((layout.schema.field(i).name().as_str(), as_f64(i)?)))
        .collect::<Result<_, StreamError>>()?;
    features.sort_by_key(|(name, _)| *name);
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        if motors.is_null(row) || starts.is_null(row) {
            continue;
        }
        let start = starts.value(row);
        let end = match (&ends, spec) {
            (Some(e), _) if !e.is_null(row) => e.value(row),
            (_, WindowSpec::Tumbling { size_ms } | WindowSpec::Hopping { size_ms, .. }) => start + size_ms,
            (_, WindowSpec::Session { .. }) => start,
        };
        let motor: &'a str = sites.get_key_value(motors.value(row)).map(|(k, _)| &**k).unwrap_or("");
        let motor_owned = if motor.is_empty() { None } else { Some(motor) };
        let Some(motor_id) = motor_owned else {
            tracing::warn!(motor = motors.value(row), "query output names a motor not in its windows; row skipped");
            continue;
        };
        let features: Vec<(&'a str, f64)> = features
            .iter()
            .filter(|(_, a)| !a.is_null(row) && a.value(row).is_finite())
            .map(|(n, a)| (*n, a.value(row)))
            .collect();
        out.push(WindowScore {
            motor_id,
            site_id: sites.get(motor_id).map_or("", |s| &**s),
            window_start_ms: start,
            window_end_ms: end,
            score: score.as_ref().filter(|s| !s.is_null(row)).map(|s| s.value(row)).filter(|v| v.is_finite()),
            features,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;

    use crate::conform;
    use crate::engine::fixtures::{QUERY, engine, readings};

    async fn run(batch_rows: usize) -> (String, String) {
        let mut engine = engine();
        engine.register(QUERY).await.unwrap();
        let all = readings();
        let mut offset = 0;
        while offset < all.num_rows() {
            let n = batch_rows.min(all.num_rows() - offset);
            let slice = all.slice(offset, n);
            engine.push(&slice, offset as i64).await.unwrap();
            offset += n;
        }
        engine.close_all(offset as i64).await.unwrap();
        let windows = engine
            .sql("SELECT motor_id, window_start, round(score, 9) AS s FROM motor_windows ORDER BY 1, 2")
            .await
            .unwrap();
        let alerts = engine
            .sql("SELECT alert_id, state, window_start FROM alerts ORDER BY window_start, alert_id, state")
            .await
            .unwrap();
        (pretty_format_batches(&windows).unwrap().to_string(), pretty_format_batches(&alerts).unwrap().to_string())
    }

    /// The engine's results must not depend on how the input is cut into batches: the same
    /// readings pushed one by one, in small batches, or all at once give the same window scores
    /// and alerts.
    #[tokio::test]
    async fn results_do_not_depend_on_batching() {
        let (windows, alerts) = run(usize::MAX).await;
        assert!(
            alerts.contains("open") && alerts.contains("close"),
            "the step in m1 raises and clears an alert:\n{alerts}"
        );
        for rows in [1, 7, 64, 250] {
            let (w, a) = run(rows).await;
            assert_eq!(w, windows, "window scores differ with batches of {rows} rows");
            assert_eq!(a, alerts, "alerts differ with batches of {rows} rows");
        }
    }

    /// Readings of two motors with some NULL currents, 4 per second.
    fn readings_with_nulls() -> RecordBatch {
        let (mut motors, mut ts, mut cur) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..2_000i64 {
            let motor = if i % 2 == 0 { "m0" } else { "m1" };
            motors.push(motor);
            ts.push(1_700_000_000_000 + i * 250 + (i * 37) % 200);
            let v = 10.0 + ((i * 7919) % 1000) as f64 / 97.0 - (i as f64 / 300.0).sin();
            cur.push(if i % 7 == 3 || (400..460).contains(&i) { None } else { Some(v) });
        }
        let schema = Schema::new(vec![
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("current_a", DataType::Float64, true),
        ]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(motors)),
                Arc::new(Int64Array::from(ts)),
                Arc::new(Float64Array::from(cur)),
            ],
        )
        .unwrap();
        conform::to_telemetry(&b, &[], 0).unwrap()
    }

    /// Every supported aggregate gives the same bits pre-aggregated as over raw rows (a filter
    /// that keeps every row forces the raw path), for tumbling and hopping windows, with NULLs
    /// and with windows where the column is all NULL.
    #[tokio::test]
    async fn preaggregated_and_raw_windows_agree() {
        for window in [
            "TUMBLE(telemetry, ts, INTERVAL '10 seconds')",
            "HOP(telemetry, ts, INTERVAL '5 seconds', INTERVAL '15 seconds')",
        ] {
            let select = "count(*) AS n, count(current_a) AS c, sum(current_a) AS s, avg(current_a) AS a, min(current_a) AS lo, max(current_a) AS hi,
                          var_samp(current_a) AS vs, var_pop(current_a) AS vp, stddev_samp(current_a) AS ss, stddev_pop(current_a) AS sp,
                          zscore(motor_id, window_start, avg(current_a), 5) AS score";
            let mut engine = engine();
            for (name, filter) in [("p", ""), ("r", "WHERE seq >= 0")] {
                engine
                    .register(&format!("CREATE CONTINUOUS QUERY {name} AS SELECT motor_id, window_start, {select} FROM {window} {filter} GROUP BY motor_id, window_start"))
                    .await
                    .unwrap();
            }
            assert_eq!(engine.stages.len(), 1);
            assert!(
                engine.stages[0].queries[0].query.aggregates().is_some()
                    && engine.stages[0].queries[1].query.aggregates().is_none()
            );
            let all = readings_with_nulls();
            for offset in (0..all.num_rows()).step_by(333) {
                engine.push(&all.slice(offset, 333.min(all.num_rows() - offset)), 0).await.unwrap();
            }
            engine.close_all(0).await.unwrap();
            let rows = |q: &'static str| {
                let engine = &engine;
                async move {
                    let b = engine.sql(&format!("SELECT motor_id, window_start, score, features FROM motor_windows WHERE query = '{q}' ORDER BY 1, 2")).await.unwrap();
                    pretty_format_batches(&b).unwrap().to_string()
                }
            };
            let (p, r) = (rows("p").await, rows("r").await);
            assert!(p.lines().count() > 100, "{p}");
            assert_eq!(p, r, "{window}");
        }
    }
}
