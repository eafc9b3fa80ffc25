//! The engine's checkpointed state: taking it ([`StreamEngine::checkpoint`]), its canonical
//! digest ([`state_digest`]), restoring it after a restart, and handing motors over to or
//! adopting them from another node when a partition moves.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Stage, StreamEngine};
use crate::StreamError;
use crate::alerts::TrackerState;
use crate::anomaly::CallState;
use crate::checkpoint;
use crate::windowing::OperatorState;

/// The canonical checksum of an engine state, and what it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDigest {
    /// xxh3-64 of the canonical form.
    pub checksum: u64,
    /// Readings the first stage's windows took in, over the engine's life.
    pub rows_in: u64,
}

/// The canonical checksum of [`StreamEngine::checkpoint`] bytes: per stage, the window
/// operator's content without processing times or first-seen order, every query's anomaly
/// baselines and alert hysteresis (already sorted by motor), in stage order.
pub fn state_digest(checkpoint_bytes: &[u8]) -> Result<StateDigest, StreamError> {
    let state: EngineState = checkpoint::from_versioned_bytes(checkpoint_bytes)?;
    let mut canonical = Vec::new();
    for stage in &state.stages {
        stage.window.canonical_into(&mut canonical)?;
        for q in &stage.queries {
            canonical.extend(checkpoint::to_bytes(&(&q.name, &q.anomaly, &q.tracker))?);
        }
    }
    Ok(StateDigest {
        checksum: xxhash_rust::xxh3::xxh3_64(&canonical),
        rows_in: state.stages.first().map_or(0, |s| s.window.rows_in()),
    })
}

/// What [`StreamEngine::restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Queries whose state (windows, anomaly baselines, alert hysteresis) was restored.
    pub restored: Vec<String>,
    /// Registered queries that start fresh: not in the checkpoint, or their stage's queries
    /// changed since.
    pub fresh: Vec<String>,
    /// Checkpointed queries that are no longer registered as they were (state dropped).
    pub dropped: Vec<String>,
    /// Motors with restored window state (the most of any stage).
    pub motors: usize,
    /// Open windows restored, over all stages.
    pub open_windows: usize,
    /// The motors whose state came back (any stage), sorted.
    pub motor_ids: Vec<String>,
}

/// The checkpoint section of the data-quality judge.
pub const QUALITY_SECTION: &str = "quality";
/// The checkpoint section of the wear judge.
pub const WEAR_SECTION: &str = "wear";
/// The checkpoint section of the shift judge.
pub const SHIFT_SECTION: &str = "shift";
/// Every section [`StreamEngine::side_checkpoints`] may write.
pub const SIDE_SECTIONS: [&str; 3] = [QUALITY_SECTION, WEAR_SECTION, SHIFT_SECTION];

/// The engine's checkpointed state (after the format version).
#[derive(Serialize, Deserialize)]
struct EngineState {
    stages: Vec<StageState>,
    /// query_errors, query_rows, alert_events.
    counters: [u64; 3],
}

/// One stage: its queries' states and its window operator's.
#[derive(Serialize, Deserialize)]
struct StageState {
    queries: Vec<QueryState>,
    window: OperatorState,
}

/// One query's state; restored only into a query of the same name and text.
#[derive(Serialize, Deserialize)]
struct QueryState {
    name: String,
    text: String,
    anomaly: Vec<CallState>,
    tracker: Option<TrackerState>,
}

impl StreamEngine {
    /// The engine's state for a checkpoint: every window operator's open windows, watermarks
    /// and buffered rows, every anomaly call's per-motor state, and every alert tracker's
    /// hysteresis (see [`crate::checkpoint`]). Take it between steps; restoring it into an
    /// engine with the same queries and feeding that engine what followed gives the same
    /// windows, scores and alerts as never stopping. The queryable tables are not part of it:
    /// they are recent history, not state.
    pub fn checkpoint(&self) -> Result<Vec<u8>, StreamError> {
        self.checkpoint_motors(&|_| true)
    }

    /// [`Self::checkpoint`] of only the motors `include` accepts: the state of one Kafka
    /// partition's motors, which moves with the partition when the consumer group rebalances
    /// (see [`Self::adopt`]).
    pub fn checkpoint_motors(&self, include: &dyn Fn(&str) -> bool) -> Result<Vec<u8>, StreamError> {
        let stages = self
            .stages
            .iter()
            .map(|stage| {
                let queries = stage
                    .queries
                    .iter()
                    .map(|q| {
                        Ok(QueryState {
                            name: q.query.def().name.clone(),
                            text: q.query.def().text.clone(),
                            anomaly: q.query.anomaly_state(include)?,
                            tracker: q.tracker.as_ref().map(|t| t.snapshot(include)),
                        })
                    })
                    .collect::<Result<_, StreamError>>()?;
                Ok(StageState { queries, window: stage.op.snapshot(include)? })
            })
            .collect::<Result<_, StreamError>>()?;
        let state = EngineState { stages, counters: [self.query_errors, self.query_rows, self.alert_events] };
        checkpoint::to_versioned_bytes(&state)
    }

    /// The state of the judges beside the queries (data quality, wear) for the motors
    /// `include` accepts: one named section each, for a partition's checkpoint (a checkpoint
    /// without one restores the rest; that judge starts afresh). Only the judges that are on.
    pub fn side_checkpoints(
        &self,
        include: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(&'static str, Vec<u8>)>, StreamError> {
        let mut sections = Vec::new();
        if let Some(q) = &self.quality {
            sections.push((QUALITY_SECTION, checkpoint::to_versioned_bytes(&q.snapshot(include))?));
        }
        if let Some(w) = &self.wear {
            sections.push((WEAR_SECTION, checkpoint::to_versioned_bytes(&w.snapshot(include)?)?));
        }
        if let Some(s) = &self.shift {
            sections.push((SHIFT_SECTION, checkpoint::to_versioned_bytes(&s.snapshot(include)?)?));
        }
        Ok(sections)
    }

    /// Takes over a [`Self::side_checkpoints`] section at processing time `now_ms` (ignored
    /// when that judge is off here, or the section is not one of them).
    pub fn adopt_side(&mut self, section: &str, bytes: &[u8], now_ms: i64) -> Result<(), StreamError> {
        match (section, &mut self.quality, &mut self.wear, &mut self.shift) {
            (QUALITY_SECTION, Some(q), ..) => q.adopt(checkpoint::from_versioned_bytes(bytes)?, now_ms),
            (WEAR_SECTION, _, Some(w), _) => w.adopt(checkpoint::from_versioned_bytes(bytes)?, now_ms)?,
            (SHIFT_SECTION, .., Some(s)) => s.adopt(checkpoint::from_versioned_bytes(bytes)?, now_ms)?,
            _ => {}
        }
        Ok(())
    }

    /// A checksum of [`Self::checkpoint`]'s bytes in canonical form (see
    /// [`state_digest`]): equal for two engines that took in the same readings, however they
    /// were batched, interleaved across motors, or stopped and restored on the way.
    pub fn state_digest(&self) -> Result<StateDigest, StreamError> {
        state_digest(&self.checkpoint()?)
    }

    /// Restores a [`Self::checkpoint`] into this engine, which must have its queries
    /// registered and no input yet. A stage whose queries (names and text) are exactly those
    /// of a checkpointed stage gets that stage's state; the others start fresh, and the report
    /// says which and why. Bytes that do not decode are an error.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<RestoreReport, StreamError> {
        if self.stages.iter().any(|s| s.op.has_input()) {
            return Err(StreamError::Checkpoint("restoring into an engine that already has input".into()));
        }
        let (report, counters) = self.restore_stages(bytes, false)?;
        [self.query_errors, self.query_rows, self.alert_events] = counters;
        self.seed_health(&report.motor_ids);
        Ok(report)
    }

    /// Adds the motors of a [`Self::checkpoint_motors`] state to this running engine: a
    /// partition handed over by the node that owned it. Stages are matched as in
    /// [`Self::restore`]; a motor this engine already holds gets the handed-over state. The
    /// engine's counters stay its own.
    pub fn adopt(&mut self, bytes: &[u8]) -> Result<RestoreReport, StreamError> {
        let report = self.restore_stages(bytes, true)?.0;
        self.seed_health(&report.motor_ids);
        Ok(report)
    }

    /// Puts the `motors` whose state came back on the health board, with their open alerts:
    /// a fleet view shows them before their next reading arrives here.
    fn seed_health(&self, motors: &[String]) {
        let wanted: BTreeSet<&str> = motors.iter().map(String::as_str).collect();
        let mut open: BTreeMap<&str, Vec<(&str, crate::Severity)>> = BTreeMap::new();
        for stage in &self.stages {
            for q in &stage.queries {
                if let Some(t) = &q.tracker {
                    for (motor, _, severity) in t.open_alerts().filter(|(m, ..)| wanted.contains(m)) {
                        open.entry(motor).or_default().push((q.query.def().name.as_str(), severity));
                    }
                }
            }
        }
        let mut seen = BTreeSet::new();
        for stage in &self.stages {
            for (motor, site) in stage.op.motor_sites().filter(|(m, _)| wanted.contains(m)) {
                if seen.insert(motor) {
                    self.health.adopted(motor, site, open.get(motor).map_or(&[], Vec::as_slice));
                }
            }
        }
    }

    /// Forgets every motor `drop` accepts: open windows, watermarks, anomaly baselines, alert
    /// hysteresis (their partition was handed to another node, with this state), and their
    /// rows in the queryable tables (the new owner answers for them now). Returns how many
    /// motors the engine held state for.
    pub fn release_motors(&mut self, drop: &dyn Fn(&str) -> bool) -> Result<usize, StreamError> {
        for table in [&self.alerts, &self.motor_windows, &self.late, &self.telemetry] {
            table.drop_motors(drop);
        }
        if let Some(quality) = &mut self.quality {
            quality.drop_motors(drop);
        }
        if let Some(wear) = &mut self.wear {
            wear.drop_motors(drop);
        }
        if let Some(shift) = &mut self.shift {
            shift.drop_motors(drop);
        }
        self.health.drop_motors(drop);
        let mut dropped = 0;
        for stage in &mut self.stages {
            dropped = dropped.max(stage.op.drop_motors(drop));
            for q in &mut stage.queries {
                q.query.drop_motors(drop)?;
                if let Some(t) = &mut q.tracker {
                    t.drop_motors(drop);
                }
            }
        }
        crate::ids::forget_unused();
        Ok(dropped)
    }

    /// The motors the engine holds window state for (any stage), sorted.
    pub fn motor_ids(&self) -> Vec<String> {
        let ids: BTreeSet<&str> = self.stages.iter().flat_map(|s| s.op.motor_ids()).collect();
        ids.into_iter().map(str::to_string).collect()
    }

    /// Restores (or with `merge`, adds) a checkpoint's stages; the saved engine counters.
    fn restore_stages(&mut self, bytes: &[u8], merge: bool) -> Result<(RestoreReport, [u64; 3]), StreamError> {
        let state: EngineState = checkpoint::from_versioned_bytes(bytes)?;
        let mut report = RestoreReport::default();
        let mut motor_ids = BTreeSet::new();
        let mut used = vec![false; self.stages.len()];
        for saved in state.stages {
            let same_queries = |stage: &Stage| {
                stage.queries.len() == saved.queries.len()
                    && stage
                        .queries
                        .iter()
                        .zip(&saved.queries)
                        .all(|(q, s)| q.query.def().name == s.name && q.query.def().text == s.text)
            };
            let Some(i) = (0..self.stages.len()).find(|&i| !used[i] && same_queries(&self.stages[i])) else {
                for q in saved.queries {
                    report.dropped.push(q.name);
                }
                continue;
            };
            used[i] = true;
            let stage = &mut self.stages[i];
            motor_ids.extend(saved.window.motor_ids().map(str::to_string));
            let (motors, open_windows) = (saved.window.motor_count(), saved.window.open_windows());
            match merge {
                true => stage.op.merge(saved.window)?,
                false => stage.op.restore(saved.window)?,
            }
            for (q, s) in stage.queries.iter_mut().zip(saved.queries) {
                q.query.restore_anomaly_state(s.anomaly, merge)?;
                match (&mut q.tracker, s.tracker) {
                    (Some(t), Some(saved)) => t.restore(saved, merge)?,
                    (None, None) => {}
                    _ => {
                        return Err(StreamError::Checkpoint(format!(
                            "query {}: alert options differ from the checkpoint's",
                            s.name
                        )));
                    }
                }
                report.restored.push(s.name);
            }
            report.motors = report.motors.max(motors);
            report.open_windows += open_windows;
        }
        for (stage, used) in self.stages.iter().zip(used) {
            if !used {
                report.fresh.extend(stage.queries.iter().map(|q| q.query.def().name.clone()));
            }
        }
        report.motor_ids = motor_ids.into_iter().collect();
        Ok((report, state.counters))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{RecordBatch, StringArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use crate::StreamError;
    use crate::engine::StreamEngine;
    use crate::engine::fixtures::{QUERY, engine_with, readings};

    /// Queries of every window kind and both window paths (running aggregates, raw rows),
    /// with anomaly functions and alerts.
    fn checkpointed_queries() -> Vec<String> {
        vec![
            QUERY.to_string(),
            "CREATE CONTINUOUS QUERY h WITH (open_above = 2, close_below = 1, open_windows = 1, close_windows = 2) AS
             SELECT motor_id, window_start, count(DISTINCT site_id) AS sites, abs(ewma_dev(motor_id, window_start, max(current_a), 0.2)) AS score
             FROM HOP(telemetry, ts, INTERVAL '5 seconds', INTERVAL '15 seconds') GROUP BY motor_id, window_start"
                .to_string(),
            "CREATE CONTINUOUS QUERY s AS SELECT motor_id, window_start, window_end, count(*) AS n, avg(temperature_c) AS t
             FROM SESSION(telemetry, ts, INTERVAL '3 seconds') WHERE current_a < 12.5 GROUP BY motor_id, window_start, window_end"
                .to_string(),
        ]
    }

    /// Every query's window rows and every alert, as text (processing times left out).
    async fn results(engines: &[&StreamEngine]) -> (String, String) {
        let mut rows = (Vec::new(), Vec::new());
        for e in engines {
            let (windows, alerts) = tables_of(e).await;
            rows.0.extend(windows);
            rows.1.extend(alerts);
        }
        text_of(rows).await
    }

    /// An engine's windows and alerts as they stand.
    async fn tables_of(e: &StreamEngine) -> (Vec<RecordBatch>, Vec<RecordBatch>) {
        let windows = e
            .sql("SELECT query, motor_id, window_start, window_end, score, features FROM motor_windows")
            .await
            .unwrap();
        let alerts = e
            .sql("SELECT alert_id, query, state, severity, score, peak_score, window_start FROM alerts")
            .await
            .unwrap();
        (windows, alerts)
    }

    /// Windows and alerts as sorted text.
    async fn text_of((windows, alerts): (Vec<RecordBatch>, Vec<RecordBatch>)) -> (String, String) {
        let ctx = SessionContext::new();
        let text = |batches: Vec<RecordBatch>, order: &'static str| {
            let ctx = &ctx;
            async move {
                let schema = batches[0].schema();
                ctx.register_table(
                    "t",
                    Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![batches]).unwrap()),
                )
                .unwrap();
                let sorted =
                    ctx.sql(&format!("SELECT * FROM t ORDER BY {order}")).await.unwrap().collect().await.unwrap();
                ctx.deregister_table("t").unwrap();
                pretty_format_batches(&sorted).unwrap().to_string()
            }
        };
        (
            text(windows, "query, motor_id, window_start, window_end").await,
            text(alerts, "window_start, alert_id, state").await,
        )
    }

    /// Stopping at any point, checkpointing, restoring into a new engine and going on gives
    /// the same windows, scores and alerts as an uninterrupted run; the restored engine's own
    /// checkpoint is byte-identical to the one it was restored from.
    #[tokio::test]
    async fn restore_and_resume_equals_an_uninterrupted_run() {
        let queries = checkpointed_queries();
        let all = readings();
        let batch_rows = 97;
        let feed = async |engine: &mut StreamEngine, rows: std::ops::Range<usize>| {
            let mut offset = rows.start;
            while offset < rows.end {
                let n = batch_rows.min(rows.end - offset);
                engine.push(&all.slice(offset, n), offset as i64).await.unwrap();
                engine.tick(offset as i64).await.unwrap();
                offset += n;
            }
        };
        let mut whole = engine_with(&queries).await;
        feed(&mut whole, 0..all.num_rows()).await;
        whole.close_all(all.num_rows() as i64).await.unwrap();
        let expected = results(&[&whole]).await;
        assert!(expected.1.contains("open") && expected.1.contains("close"), "{}", expected.1);
        assert!(expected.0.contains("| h ") && expected.0.contains("| s "), "{}", expected.0);

        for cut in [1, 291, 900, 1_000, 1_799] {
            let mut first = engine_with(&queries).await;
            feed(&mut first, 0..cut).await;
            let state = first.checkpoint().unwrap();
            let mut second = engine_with(&queries).await;
            let report = second.restore(&state).unwrap();
            assert_eq!(report.restored, ["q", "h", "s"], "cut at {cut}");
            assert!(report.fresh.is_empty() && report.dropped.is_empty());
            assert_eq!(
                second.checkpoint().unwrap(),
                state,
                "the restored state checkpoints to the same bytes (cut at {cut})"
            );
            feed(&mut second, cut..all.num_rows()).await;
            second.close_all(all.num_rows() as i64).await.unwrap();
            assert_eq!(
                second.state_digest().unwrap(),
                whole.state_digest().unwrap(),
                "same state as the uninterrupted run (cut at {cut})"
            );
            let got = results(&[&first, &second]).await;
            assert_eq!(got.0, expected.0, "window results differ after a restore at row {cut}");
            assert_eq!(got.1, expected.1, "alerts differ after a restore at row {cut}");
        }
    }

    /// A restart longer than the idle timeout: the restored motors' windows wait for the input
    /// read again instead of closing at the first tick (which would put every re-read reading
    /// that belongs in them on the late path); their idle clock starts at that first tick.
    #[tokio::test]
    async fn a_restore_after_a_long_outage_does_not_make_the_input_read_again_late() {
        let queries = checkpointed_queries();
        let all = readings();
        let (cut, hour) = (900, 3_600_000);
        let stat = |e: &StreamEngine, f: fn(&crate::windowing::WindowStats) -> u64| {
            e.stats().windows.iter().map(|(_, w)| f(w)).sum::<u64>()
        };
        let late = |w: &crate::windowing::WindowStats| w.rows_late;
        let closed_idle = |w: &crate::windowing::WindowStats| w.windows_closed_idle;
        let mut whole = engine_with(&queries).await;
        whole.push(&all, 0).await.unwrap();
        let mut first = engine_with(&queries).await;
        first.push(&all.slice(0, cut), 0).await.unwrap();
        let state = first.checkpoint().unwrap();

        let mut second = engine_with(&queries).await;
        second.restore(&state).unwrap();
        let back = 10 * hour;
        second.tick(back).await.unwrap();
        assert_eq!(stat(&second, closed_idle), 0, "ten hours down: no restored window closes at the first tick");
        second.push(&all.slice(cut, all.num_rows() - cut), back).await.unwrap();
        assert_eq!(stat(&second, late), stat(&whole, late), "the input read again is on time");
        assert_eq!(stat(&whole, late), 0);
        second.tick(back + hour - 1).await.unwrap();
        assert_eq!(stat(&second, closed_idle), 0);
        second.tick(back + hour).await.unwrap();
        assert!(stat(&second, closed_idle) > 0, "silent for the idle timeout since: idle again");
    }

    /// Motor m1's partition moves from one engine to another mid-stream: its state is
    /// checkpointed alone, released by the old owner (its rows leave that owner's tables too)
    /// and adopted by the new one, which goes on with every motor. Windows, alerts and the final state equal an uninterrupted run's;
    /// per-motor checkpoints adopted into an empty engine add up to the whole checkpoint.
    #[tokio::test]
    async fn a_partition_handed_over_mid_stream_equals_an_uninterrupted_run() {
        let queries = checkpointed_queries();
        let all = readings();
        let moved = |m: &str| m == "m1";
        let motors_where = |batch: &RecordBatch, keep: &dyn Fn(&str) -> bool| {
            let ids = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let mask: datafusion::arrow::array::BooleanArray = ids.iter().map(|m| Some(keep(m.unwrap()))).collect();
            datafusion::arrow::compute::filter_record_batch(batch, &mask).unwrap()
        };
        let feed = async |engine: &mut StreamEngine, rows: std::ops::Range<usize>, keep: &dyn Fn(&str) -> bool| {
            let mut offset = rows.start;
            while offset < rows.end {
                let n = 97.min(rows.end - offset);
                engine.push(&motors_where(&all.slice(offset, n), keep), offset as i64).await.unwrap();
                engine.tick(offset as i64).await.unwrap();
                offset += n;
            }
        };
        let mut whole = engine_with(&queries).await;
        feed(&mut whole, 0..all.num_rows(), &|_| true).await;
        whole.close_all(all.num_rows() as i64).await.unwrap();
        let expected = results(&[&whole]).await;

        for cut in [450, 1_000] {
            let (mut a, mut b) = (engine_with(&queries).await, engine_with(&queries).await);
            feed(&mut a, 0..cut, &|m| !moved(m)).await;
            feed(&mut b, 0..cut, &moved).await;
            let handed = b.checkpoint_motors(&moved).unwrap();
            // What the old owner emitted before the hand-over (its tables drop m1's rows then).
            let emitted = tables_of(&b).await;
            assert_eq!(b.release_motors(&moved).unwrap(), 1);
            let left = tables_of(&b).await;
            assert_eq!(left.0.iter().chain(&left.1).map(RecordBatch::num_rows).sum::<usize>(), 0, "m1's rows dropped");
            assert!(
                b.motor_ids().is_empty() && b.checkpoint_motors(&moved).unwrap() != handed,
                "the old owner keeps nothing of m1"
            );
            let report = a.adopt(&handed).unwrap();
            assert_eq!((report.restored.len(), report.motor_ids.clone()), (3, vec!["m1".to_string()]), "{report:?}");
            assert_eq!(a.motor_ids(), ["m0", "m1", "m2"]);
            feed(&mut a, cut..all.num_rows(), &|_| true).await;
            a.close_all(all.num_rows() as i64).await.unwrap();
            assert_eq!(
                a.state_digest().unwrap(),
                whole.state_digest().unwrap(),
                "same state as the uninterrupted run (cut at {cut})"
            );
            let (mut windows, mut alerts) = tables_of(&a).await;
            windows.extend(emitted.0);
            alerts.extend(emitted.1);
            let got = text_of((windows, alerts)).await;
            assert_eq!(got.0, expected.0, "window results differ after a handover at row {cut}");
            assert_eq!(got.1, expected.1, "alerts differ after a handover at row {cut}");
        }

        // Split by motor and adopted piece by piece, the state is the whole state.
        let mut half = engine_with(&queries).await;
        feed(&mut half, 0..1_000, &|_| true).await;
        let mut joined = engine_with(&queries).await;
        for m in ["m2", "m0", "m1"] {
            joined.adopt(&half.checkpoint_motors(&|id| id == m).unwrap()).unwrap();
        }
        assert_eq!(joined.state_digest().unwrap(), half.state_digest().unwrap());
    }

    /// The judges of an engine whose silent motors go cold (into the spill file) end in the
    /// same state, and raise the same alerts, as those of an engine that keeps every motor in
    /// memory; a checkpoint taken with motors cold restores (straight into the file) and goes
    /// on the same.
    #[tokio::test]
    async fn judges_whose_silent_motors_go_cold_decide_as_if_they_had_stayed() {
        let judged = || {
            let mut engine = crate::engine::fixtures::engine();
            engine.config.shift = Some(crate::shift::ShiftConfig {
                min_baseline_windows: 5,
                readings_per_window: 3,
                ..Default::default()
            });
            engine.config.wear = Some(Default::default());
            engine.shift = engine.config.shift.map(crate::shift::ShiftMonitor::new);
            engine.wear = engine.config.wear.map(|w| crate::wear::WearMonitor::new(w, Default::default()));
            engine
        };
        let dir = tempfile::tempdir().unwrap();
        let spill = crate::cold::ColdSpill { dir: dir.path().to_path_buf(), after_ms: 60_000 };
        let (mut hot, mut spilled) = (judged(), judged());
        spilled.spill_cold_motors(&spill).unwrap();
        let batches = crate::engine::fixtures::slow_readings(1_000);
        let (mut hot_alerts, mut spilled_alerts) = (Vec::new(), Vec::new());
        let mut coldest = u64::MAX;
        let (first, rest) = batches.split_at(4 * 800);
        // Batch i is motor i % 4's reading of step i / 4 (see `slow_readings`).
        let at = |i: usize| 1_700_000_000_000 + (i / 4) as i64 * 120_000 + (i % 4) as i64 * 30_000;
        for (i, b) in first.iter().enumerate() {
            let now = at(i);
            hot_alerts.extend(hot.push(b, now).await.unwrap().alerts);
            spilled_alerts.extend(spilled.push(b, now).await.unwrap().alerts);
            coldest = coldest.min(spilled.stats().judge_motors.values().map(|(_, in_memory)| in_memory).sum());
        }
        let all = |_: &str| true;
        let judges = spilled.stats().judge_motors;
        assert_eq!(judges.keys().copied().collect::<Vec<_>>(), ["shift", "wear"]);
        assert!(coldest <= 4, "a motor 2 minutes silent goes cold (at most 2 of 8 in memory at a time): {coldest}");
        assert_eq!(hot.stats().judge_motors.values().map(|(_, h)| h).sum::<u64>(), 8, "without a spill all stay");
        assert_eq!(spilled.side_checkpoints(&all).unwrap(), hot.side_checkpoints(&all).unwrap(), "the same state");
        let kinds = |alerts: &[crate::alerts::AlertEvent]| {
            alerts.iter().map(|a| (a.query.clone(), a.motor_id.clone(), a.window_start_ms)).collect::<Vec<_>>()
        };
        assert_eq!(kinds(&spilled_alerts), kinds(&hot_alerts), "the same alerts");
        assert!(
            hot_alerts.iter().any(|a| a.query == crate::shift::SHIFT && a.motor_id == "m1"),
            "{:?}",
            kinds(&hot_alerts)
        );

        // A restart: the checkpoint, taken with motors cold, restored into a fresh engine.
        let mut restarted = judged();
        restarted.spill_cold_motors(&spill).unwrap();
        let now = at(first.len());
        for (section, bytes) in spilled.side_checkpoints(&all).unwrap() {
            restarted.adopt_side(section, &bytes, now).unwrap();
        }
        for (i, b) in rest.iter().enumerate() {
            let now = at(first.len() + i);
            hot.push(b, now).await.unwrap();
            restarted.push(b, now).await.unwrap();
        }
        assert_eq!(restarted.side_checkpoints(&all).unwrap(), hot.side_checkpoints(&all).unwrap());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the spill files have no names");
    }

    /// A changed query starts fresh and is reported; bytes that do not decode are an error.
    #[tokio::test]
    async fn a_changed_query_starts_fresh_and_garbage_is_refused() {
        let queries = checkpointed_queries();
        let mut first = engine_with(&queries).await;
        first.push(&readings().slice(0, 600), 0).await.unwrap();
        let state = first.checkpoint().unwrap();
        let mut changed = queries.clone();
        changed[2] = changed[2].replace("12.5", "13");
        let mut second = engine_with(&changed).await;
        let report = second.restore(&state).unwrap();
        assert!(report.open_windows > 0 && report.motors == 3, "{report:?}");
        assert_eq!(
            (report.restored, report.fresh, report.dropped),
            (vec!["q".to_string(), "h".into()], vec!["s".to_string()], vec!["s".to_string()])
        );
        let mut third = engine_with(&queries).await;
        let err = third.restore(&state[..state.len() / 2]).unwrap_err();
        assert!(matches!(err, StreamError::CheckpointCodec { action: "decoding state", .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.starts_with("checkpoint: decoding state"), "{err}");
        let err = second.restore(&state).unwrap_err().to_string();
        assert!(err.contains("already has input") || err.contains("fit"), "{err}");
    }
}
