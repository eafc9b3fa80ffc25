//! The detection thread: takes the ingest's batches into the engine, writes alerts and late
//! readings, adopts a partition's checkpoint on assignment, and at each barrier encodes the
//! checkpoints of the partitions with new messages for the [`super::CheckpointWriter`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use tessera_ingest::{Barrier, BatchAck, Control, PartitionStart, ShardBatch, TopicPartition, readings_from_batch};
use tessera_state::{Checkpoint, SourceOffset};
use tessera_stream::{StepOutput, StreamEngine};

use tessera_core::now_ms;

use super::checkpoint_writer::{CheckpointFile, CheckpointJob, CheckpointWriter, RunningWriter, SharedStore};
use crate::durability::{StoreInput, StoreLink, StoredStream};
use crate::error::NodeError;

type Result<T, E = NodeError> = std::result::Result<T, E>;
use super::{Adopted, DeliveryCheck, DetectConfig, DetectStats, ENGINE_SECTION, QueryChange, RunningQueries};

/// A partition this stage owns: its store, and what its newest checkpoint covers.
#[derive(Debug)]
pub(super) struct OwnedPartition {
    /// Written by the checkpoint writer only.
    pub(super) store: SharedStore,
    /// Id of the newest checkpoint in the store (0: none).
    pub(super) last_id: u64,
    /// The next offset past what the engine has taken in of this partition, and past what the
    /// newest checkpoint holds (`None`: nothing yet).
    pub(super) next_offset: Option<i64>,
    pub(super) checkpointed_offset: Option<i64>,
}

pub(super) struct Worker {
    pub(super) engine: StreamEngine,
    pub(super) producer: Arc<ThreadedProducer<DeliveryCheck>>,
    /// The checkpoint writer (checkpointed stages only), started when the loop starts.
    pub(super) checkpoint_writer: Option<CheckpointWriter>,
    /// The running writer's queue and thread.
    pub(super) writer: Option<RunningWriter>,
    pub(super) config: DetectConfig,
    pub(super) stats: Arc<Mutex<DetectStats>>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) end_of_input: Arc<AtomicBool>,
    pub(super) checkpointed: bool,
    /// The partitions this stage owns, and the partition of each motor it holds state for.
    pub(super) owned: BTreeMap<TopicPartition, OwnedPartition>,
    pub(super) motor_partition: HashMap<String, TopicPartition>,
    /// Acknowledgements held until a checkpoint covers their batches.
    pub(super) held: Vec<BatchAck>,
    pub(super) batches_since_checkpoint: u64,
    /// Changes to the running queries, applied between steps.
    pub(super) changes: Receiver<QueryChange>,
    pub(super) running: RunningQueries,
    /// The site's store of raw readings, if any.
    pub(super) raw: Option<StoreLink>,
    /// Alertmanager and webhook receivers (`[notify]`), if any.
    pub(super) notifier: Option<crate::notify::Notifier>,
    /// The newest barrier's epoch (the store's mark for it).
    pub(super) last_epoch: u64,
    pub(super) alert_latency: Arc<tessera_core::LatencyHistogram>,
    /// When the loop last turned (the liveness probe's heartbeat).
    pub(super) last_turn_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl Worker {
    pub(super) fn run(mut self, batches: Receiver<ShardBatch>) -> Result<StreamEngine> {
        if let Some(writer) = self.checkpoint_writer.take() {
            self.writer = Some(writer.spawn()?);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|source| NodeError::Io { what: "building the detect thread's runtime", source })?;
        let tick = Duration::from_millis(100);
        loop {
            match batches.recv_timeout(tick) {
                Ok(ShardBatch { batch: rows, ack, control, span, .. }) => {
                    if rows.num_rows() > 0 {
                        let step = tracing::info_span!(parent: &span, "detect.step", rows = rows.num_rows(), windows_closed = tracing::field::Empty, alerts = tracing::field::Empty);
                        let _in_step = step.enter();
                        let started = Instant::now();
                        if let Some(raw) = &self.raw {
                            let telemetry = rows
                                .project(&(0..tessera_core::telemetry_schema().fields().len()).collect::<Vec<_>>())?;
                            raw.input
                                .send(StoreInput::Rows(StoredStream::Telemetry, telemetry))
                                .map_err(|_| NodeError::Stopped("telemetry store"))?;
                        }
                        let out = rt.block_on(self.engine.push(&rows, now_ms())).map_err(engine("a detection step"))?;
                        step.record("windows_closed", out.windows_closed);
                        step.record("alerts", out.alerts.len());
                        self.publish(out, started)?;
                        self.batches_since_checkpoint += 1;
                        if let Ok(mut s) = self.stats.lock() {
                            s.batches += 1;
                        }
                    }
                    match (self.checkpointed, &self.raw) {
                        (true, _) => self.held.push(ack),
                        // Acknowledged once the store holds the rows.
                        (false, Some(raw)) => raw
                            .input
                            .send(StoreInput::Acks(vec![ack]))
                            .map_err(|_| NodeError::Stopped("telemetry store"))?,
                        (false, None) => ack.ack(),
                    }
                    match control {
                        Some(Control::Barrier(barrier)) if self.checkpointed => self.checkpoint(&barrier)?,
                        Some(Control::Assigned(starts)) if self.checkpointed => self.adopt(starts)?,
                        _ => {}
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.last_turn_ms.store(now_ms(), Ordering::Relaxed);
            let started = Instant::now();
            let out = rt.block_on(self.engine.tick(now_ms())).map_err(engine("closing windows"))?;
            self.publish(out, started)?;
            self.apply_query_changes(&rt);
            if let Ok(mut s) = self.stats.lock() {
                s.engine = self.engine.stats();
            }
            if self.writer.as_ref().is_some_and(|(_, thread)| thread.is_finished()) {
                return Err(self.stop_writer().expect_err("the writer stops only on an error"));
            }
        }
        if self.end_of_input.load(Ordering::Relaxed) {
            let started = Instant::now();
            let out = rt.block_on(self.engine.close_all(now_ms())).map_err(engine("closing every window"))?;
            self.publish(out, started)?;
        }
        // The writer's last jobs wait for the store: have it cut what is pending now.
        self.mark_store(true, &[])?;
        self.stop_writer()?;
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|source| NodeError::Kafka { what: "flushing alerts and late readings".into(), source })?;
        Ok(self.engine)
    }

    /// Applies the queued changes to the running queries. A change that cannot be applied is
    /// logged and counted, not fatal: one bad query must not stop the stage.
    fn apply_query_changes(&mut self, rt: &tokio::runtime::Runtime) {
        let mut applied = false;
        while let Ok(change) = self.changes.try_recv() {
            let result = match &change {
                QueryChange::Register { name, sql } => self.register_standalone(rt, name, sql),
                QueryChange::Drop { name } if !self.engine.queries().any(|q| q.name == *name) => {
                    // Never ran here (refused when registered): nothing to stop.
                    tracing::debug!(query = %name, "dropping a query that is not running");
                    continue;
                }
                QueryChange::Drop { name } => self
                    .engine
                    .unregister(name)
                    .map(|_| ())
                    .map_err(|source| NodeError::Query { name: name.clone(), source }),
            };
            match result {
                Ok(()) => {
                    tracing::info!(change = ?change, "running queries changed");
                    applied = true;
                    if let Ok(mut s) = self.stats.lock() {
                        s.query_changes += 1;
                    }
                }
                Err(e) => {
                    let why = tessera_core::error_chain(&e);
                    tracing::error!(error = %why, "a change to the running queries was refused");
                    if let Ok(mut s) = self.stats.lock() {
                        s.query_changes_refused.push(why);
                    }
                }
            }
        }
        if applied {
            self.running.update(&self.engine);
        }
        if applied && let Ok(mut s) = self.stats.lock() {
            let mut names: Vec<String> = self.engine.queries().map(|q| q.name.clone()).collect();
            names.sort();
            s.queries = names;
        }
    }

    /// Registers `sql` on windows of its own, if it creates the query `name`.
    fn register_standalone(&mut self, rt: &tokio::runtime::Runtime, name: &str, sql: &str) -> Result<()> {
        let created = rt
            .block_on(self.engine.register_standalone(sql))
            .map_err(|source| NodeError::Query { name: name.to_string(), source })?
            .name
            .clone();
        if created != name {
            self.engine.unregister(&created).map_err(|source| NodeError::Query { name: created.clone(), source })?;
            return Err(NodeError::QueryName { name: name.to_string(), created });
        }
        Ok(())
    }

    /// Lets the checkpoint writer finish the jobs it has, and returns its error if it failed.
    fn stop_writer(&mut self) -> Result<()> {
        let Some((jobs, thread)) = self.writer.take() else { return Ok(()) };
        drop(jobs);
        thread.join().map_err(|_| NodeError::Panicked("checkpoint writer"))?
    }

    /// Newly assigned partitions: each one's checkpoint is adopted into the engine (its motors'
    /// state added), and the partition is owned from now on.
    fn adopt(&mut self, starts: Vec<PartitionStart>) -> Result<()> {
        for start in starts {
            let tp = (start.topic, start.partition);
            if self.owned.contains_key(&tp) {
                // Our state of it is newer than its checkpoint: keep it.
                tracing::warn!(topic = %tp.0, partition = tp.1, "assigned a partition this stage already owns; keeping its state");
                continue;
            }
            let assigned =
                start.state.and_then(|s| s.downcast::<crate::checkpoints::AssignedStore>().ok()).ok_or_else(|| {
                    NodeError::BadCheckpoint(format!(
                        "partition {}/{} was assigned without its checkpoint store",
                        tp.0, tp.1
                    ))
                })?;
            let mut last_id = assigned.store.newest().unwrap_or(0);
            if start.stale {
                tracing::warn!(topic = %tp.0, partition = tp.1, "the partition's checkpoint is older than the group's committed offset; its motors start fresh");
            }
            if let Some(loaded) = assigned.loaded.as_ref().filter(|_| !start.stale) {
                let section = loaded.checkpoint.section(ENGINE_SECTION).ok_or_else(|| {
                    NodeError::BadCheckpoint(format!(
                        "checkpoint {} has no {ENGINE_SECTION} section",
                        loaded.path.display()
                    ))
                })?;
                let report = self.engine.adopt(section).map_err(|source| NodeError::Engine {
                    what: format!("restoring {}", loaded.path.display()),
                    source,
                })?;
                for m in &report.motor_ids {
                    self.motor_partition.insert(m.clone(), tp.clone());
                }
                // The judges beside the queries (data quality, wear), where the checkpoint has them.
                for name in tessera_stream::engine::SIDE_SECTIONS {
                    if let Some(bytes) = loaded.checkpoint.section(name) {
                        self.engine.adopt_side(name, bytes, now_ms()).map_err(|source| NodeError::Engine {
                            what: format!("restoring the {name} section of {}", loaded.path.display()),
                            source,
                        })?;
                    }
                }
                tracing::info!(
                    topic = %tp.0, partition = tp.1, id = loaded.checkpoint.id, motors = report.motors, open_windows = report.open_windows,
                    fresh = ?report.fresh, dropped = ?report.dropped, "adopted the partition's checkpoint"
                );
                last_id = last_id.max(loaded.checkpoint.id);
                if let Ok(mut s) = self.stats.lock() {
                    s.adopted.push(Adopted {
                        partition: tp.clone(),
                        id: loaded.checkpoint.id,
                        motors: report.motors,
                        open_windows: report.open_windows,
                        fresh: report.fresh,
                    });
                }
            }
            let offset = start.resume_at;
            self.owned.insert(
                tp,
                OwnedPartition {
                    store: Arc::new(Mutex::new(assigned.store)),
                    last_id,
                    next_offset: offset,
                    checkpointed_offset: offset,
                },
            );
        }
        if let Ok(mut s) = self.stats.lock() {
            s.partitions_owned = self.owned.len();
        }
        Ok(())
    }

    /// Takes a checkpoint at `barrier`: the state of each partition with new messages encoded
    /// with its offset, then the revoked partitions' motors forgotten, then the checkpoints and
    /// the held batches' acknowledgements handed to the writer (which confirms what was sent,
    /// writes, and then acknowledges).
    fn checkpoint(&mut self, barrier: &Barrier) -> Result<()> {
        let started = Instant::now();
        for (motor, tp) in &barrier.motors {
            self.motor_partition.insert(motor.clone(), tp.clone());
        }
        for (topic, partition, next) in &barrier.offsets {
            match self.owned.get_mut(&(topic.clone(), *partition)) {
                Some(p) => p.next_offset = Some(p.next_offset.map_or(*next, |o| o.max(*next))),
                None => tracing::warn!(
                    topic,
                    partition,
                    "a barrier names a partition this node was not assigned; not checkpointed"
                ),
            }
        }
        let revoked = |tp: &TopicPartition| barrier.revoked.contains(tp);
        let due: Vec<TopicPartition> = self
            .owned
            .iter()
            .filter(|(tp, p)| p.next_offset != p.checkpointed_offset && !(barrier.lost && revoked(tp)))
            .map(|(tp, _)| tp.clone())
            .collect();
        let encoding = Instant::now();
        let files = self.encode_checkpoints(&due)?;
        let job = CheckpointJob {
            epoch: barrier.epoch,
            files,
            acks: std::mem::take(&mut self.held),
            encode: encoding.elapsed(),
        };
        self.last_epoch = self.last_epoch.max(barrier.epoch);
        if !barrier.revoked.is_empty() {
            let released = self
                .engine
                .release_motors(&|m| self.motor_partition.get(m).is_some_and(revoked))
                .map_err(engine("handing partitions over"))?;
            self.motor_partition.retain(|_, tp| !revoked(tp));
            self.owned.retain(|tp, _| !revoked(tp));
            tracing::info!(
                partitions = barrier.revoked.len(),
                motors = released,
                lost = barrier.lost,
                "handed partitions over"
            );
            if let Ok(mut s) = self.stats.lock() {
                s.motors_released += released as u64;
                s.partitions_owned = self.owned.len();
            }
        }
        self.batches_since_checkpoint = 0;
        let (jobs, _) = self.writer.as_ref().expect("a checkpointed stage has a writer");
        if jobs.send(job).is_err() {
            return Err(self.stop_writer().err().unwrap_or(NodeError::Stopped("checkpoint writer")));
        }
        // A partition handed over must be checkpointed now, not at the store's next cut.
        self.mark_store(!barrier.revoked.is_empty(), &barrier.motors)?;
        if let Ok(mut s) = self.stats.lock() {
            s.longest_checkpoint_pause_us = s.longest_checkpoint_pause_us.max(started.elapsed().as_micros() as u64);
        }
        Ok(())
    }

    /// Tells the store that the rows sent so far are to be durable for the newest barrier's
    /// checkpoints (`now`: cut a segment at once), and the partitions of the motors the barrier
    /// saw first.
    fn mark_store(&self, now: bool, motors: &[(String, TopicPartition)]) -> Result<()> {
        let motors = motors.iter().map(|(m, (topic, p))| (m.clone(), format!("{topic}/{p}"))).collect();
        match &self.raw {
            Some(raw) if self.checkpointed => raw
                .input
                .send(StoreInput::Mark { epoch: self.last_epoch, now, motors })
                .map_err(|_| NodeError::Stopped("telemetry store")),
            _ => Ok(()),
        }
    }

    /// Encodes the checkpoint of each `due` partition: its motors' state and its next offset.
    /// The partitions count them as written from here on (if the writer fails, the stage
    /// stops).
    fn encode_checkpoints(&mut self, due: &[TopicPartition]) -> Result<Vec<CheckpointFile>> {
        let mut files = Vec::with_capacity(due.len());
        for tp in due {
            let include = |m: &str| self.motor_partition.get(m) == Some(tp);
            let state =
                self.engine.checkpoint_motors(&include).map_err(engine("checkpoint: encoding the engine state"))?;
            let sides =
                self.engine.side_checkpoints(&include).map_err(engine("checkpoint: encoding the judges' state"))?;
            let mut sections = vec![(ENGINE_SECTION.to_string(), state)];
            sections.extend(sides.into_iter().map(|(name, bytes)| (name.to_string(), bytes)));
            let p = self.owned.get_mut(tp).expect("due partitions are owned");
            let next_offset = p.next_offset.expect("a due partition has an offset");
            let checkpoint = Checkpoint {
                id: p.last_id + 1,
                created_ms: now_ms(),
                offsets: vec![SourceOffset { topic: tp.0.clone(), partition: tp.1, next_offset }],
                sections,
            };
            (p.last_id, p.checkpointed_offset) = (checkpoint.id, Some(next_offset));
            files.push((tp.clone(), p.store.clone(), checkpoint));
        }
        Ok(files)
    }

    /// Writes a step's alerts, late readings and failed runs; `started` is when the step that
    /// closed the windows began.
    fn publish(&mut self, out: StepOutput, started: Instant) -> Result<()> {
        self.keep(&out)?;
        let mut alerts = 0;
        let mut by_kind: BTreeMap<(String, &'static str, &'static str), u64> = BTreeMap::new();
        for event in &out.alerts {
            let _alert = tracing::info_span!(
                "alert.emit",
                query = %event.query,
                motor_id = %event.motor_id,
                state = ?event.state,
                severity = ?event.severity,
                peak_score = event.peak_score
            )
            .entered();
            let payload = serde_json::to_vec(event)?;
            self.send(&self.config.alerts_topic, &event.motor_id, &payload, None)?;
            if let Some(notifier) = &self.notifier {
                notifier.notify(event);
            }
            self.alert_latency.observe(started.elapsed());
            alerts += 1;
            *by_kind.entry((event.query.clone(), event.severity.as_str(), event.state.as_str())).or_insert(0) += 1;
        }
        let mut late = 0;
        for batch in &out.late {
            late += self.publish_late(batch)?;
        }
        for failed in &out.failed {
            self.publish_failed(failed)?;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.alerts_sent += alerts;
            s.late_sent += late;
            for (kind, n) in by_kind {
                *s.alert_events.entry(kind).or_insert(0) += n;
            }
        }
        Ok(())
    }

    /// What a step made (window results, alert events, late readings), to the store if the
    /// site has one: sent before the next barrier's mark, so a checkpoint never covers a result
    /// the store could still lose, and a result a restore makes again was not stored before.
    fn keep(&self, out: &StepOutput) -> Result<()> {
        let Some(raw) = &self.raw else { return Ok(()) };
        let rows = (out.window_rows.iter().map(|b| (StoredStream::MotorWindows, b)))
            .chain(out.alert_rows.iter().map(|b| (StoredStream::Alerts, b)))
            .chain(out.late.iter().map(|b| (StoredStream::LateEvents, b)));
        for (stream, batch) in rows.filter(|(_, b)| b.num_rows() > 0) {
            raw.input.send(StoreInput::Rows(stream, batch.clone())).map_err(|_| NodeError::Stopped("site store"))?;
        }
        Ok(())
    }

    /// A failed query run's windows, to the dead-letter topic: Arrow IPC, with the reason
    /// (`query_failed`), the error and the query in headers, keyed by the query.
    fn publish_failed(&mut self, failed: &tessera_stream::FailedRun) -> Result<()> {
        use tessera_ingest::dead_letter_headers as h;
        let mut payload = Vec::new();
        let mut writer =
            datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut payload, failed.windows.schema_ref())?;
        writer.write(&failed.windows)?;
        writer.finish()?;
        drop(writer);
        let headers = OwnedHeaders::new()
            .insert(Header { key: h::REASON, value: Some("query_failed") })
            .insert(Header { key: h::DETAIL, value: Some(failed.error.as_str()) })
            .insert(Header { key: "tessera.dlq.query", value: Some(failed.query.as_str()) })
            .insert(Header { key: "content-type", value: Some("application/vnd.apache.arrow.stream") });
        let record = BaseRecord::to(&self.config.dead_letter_topic)
            .key(failed.query.as_str())
            .payload(&payload)
            .headers(headers);
        self.producer.send(record).map_err(|(source, _)| NodeError::Kafka {
            what: format!("writing to {}", self.config.dead_letter_topic),
            source,
        })?;
        if let Ok(mut s) = self.stats.lock() {
            s.failed_runs += 1;
        }
        Ok(())
    }

    fn publish_late(&self, batch: &RecordBatch) -> Result<u64> {
        let telemetry = batch.project(&(0..tessera_core::telemetry_schema().fields().len()).collect::<Vec<_>>())?;
        let late_for =
            batch.column(batch.num_columns() - 1).as_any().downcast_ref::<arrow_array::StringArray>().cloned();
        for (i, r) in readings_from_batch(&telemetry).iter().enumerate() {
            let payload = serde_json::to_vec(&tessera_proto::json::reading_to_json(r))?;
            let why = late_for.as_ref().map(|a| a.value(i).to_string()).unwrap_or_default();
            self.send(&self.config.late_topic, r.motor_id.as_str(), &payload, Some(&why))?;
        }
        Ok(telemetry.num_rows() as u64)
    }

    fn send(&self, topic: &str, key: &str, payload: &[u8], late_for: Option<&str>) -> Result<()> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(why) = late_for {
            record = record.headers(OwnedHeaders::new().insert(Header { key: "tessera.late.for", value: Some(why) }));
        }
        let mut record = Some(record);
        // The producer's queue can be full for a moment: wait rather than drop.
        for _ in 0..600 {
            match self.producer.send(record.take().expect("record")) {
                Ok(()) => return Ok(()),
                Err((e, back)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    record = Some(back);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((source, _)) => return Err(NodeError::Kafka { what: format!("writing to {topic}"), source }),
            }
        }
        Err(NodeError::QueueFull { topic: topic.to_string(), waited: Duration::from_secs(30) })
    }
}

/// An engine failure while `what`.
fn engine(what: &'static str) -> impl FnOnce(tessera_stream::StreamError) -> NodeError {
    move |source| NodeError::Engine { what: what.to_string(), source }
}
