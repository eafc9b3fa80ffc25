//! The detection stage of a node: takes the ingest's shard batches, runs them through the
//! stream engine (windows, continuous queries, alerts) on its own thread, and writes alert
//! events and late readings to Kafka.
//!
//! Without a checkpoint store, a batch is acknowledged to the ingest once the engine has taken
//! it in, so offsets advance while windows are still open: a crash loses open windows.
//!
//! With one ([`Checkpointing`]), the stage holds every acknowledgement until a checkpoint
//! covers the batch. On each barrier from the ingest it (1) waits until every alert and late
//! reading produced so far is confirmed by the broker, (2) writes the engine's state with the
//! barrier's offsets to the store (temp file, fsync, rename), and only then (3) acknowledges the
//! batches before the barrier, which lets the ingest commit their offsets. A crash anywhere
//! loses nothing: the restart restores the newest checkpoint and re-reads from its offsets;
//! what was sent after it is sent again with the same alert ids (see ARCHITECTURE.md,
//! "Effectively-once alerts"). A failed checkpoint write stops the stage with the error.
//!
//! Alerts go to `alerts_topic` as JSON keyed by motor id (schema in `tessera_stream::alerts`);
//! late readings go to `late_topic` as reading JSON with the header `tessera.late.for` naming
//! the window they missed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};
use arrow_array::RecordBatch;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Serialize};
use tessera_core::WatermarkPolicy;
use tessera_ingest::{Barrier, BatchAck, ShardBatch, readings_from_batch};
use tessera_state::{Checkpoint, CheckpointStore, SourceOffset};
use tessera_stream::{EngineStats, StepOutput, StreamConfig, StreamEngine};

use crate::producer::{now_ms, reading_json};

/// The `[detect]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// `CREATE CONTINUOUS QUERY` statements; empty: the default rule set ([`crate::rules`]).
    pub queries: Vec<String>,
    /// How far behind a motor's newest reading a reading may arrive and still count.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Silence after which a motor's open windows close.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Topic of alert events.
    pub alerts_topic: String,
    /// Topic of late readings.
    pub late_topic: String,
    /// Rows kept in each queryable table.
    pub table_rows: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            queries: Vec::new(),
            allowed_lateness: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            alerts_topic: "tessera-alerts".into(),
            late_topic: "tessera-late".into(),
            table_rows: 1_000_000,
        }
    }
}

impl DetectConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(!self.alerts_topic.is_empty(), "detect.alerts_topic must not be empty");
        anyhow::ensure!(!self.late_topic.is_empty(), "detect.late_topic must not be empty");
        anyhow::ensure!(self.idle_timeout > Duration::ZERO, "detect.idle_timeout must be positive");
        anyhow::ensure!(self.table_rows > 0, "detect.table_rows must be positive");
        Ok(())
    }

    /// The queries to run: the configured ones or the defaults.
    pub fn effective_queries(&self) -> Vec<String> {
        if self.queries.is_empty() { crate::rules::DEFAULT_RULES.iter().map(|s| s.to_string()).collect() } else { self.queries.clone() }
    }

    fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            watermark: WatermarkPolicy {
                allowed_lateness_ms: self.allowed_lateness.as_millis() as i64,
                idle_timeout_ms: self.idle_timeout.as_millis() as i64,
            },
            table_rows: self.table_rows,
        }
    }
}

/// Builds an engine with the configured queries; a bad query fails here, naming it.
pub fn build_engine(config: &DetectConfig) -> Result<StreamEngine> {
    config.validate()?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut engine = StreamEngine::new(config.stream_config());
    for sql in config.effective_queries() {
        rt.block_on(engine.register(&sql)).map_err(|e| anyhow::anyhow!("detect.queries: {e}"))?;
    }
    Ok(engine)
}

/// Where and from what the stage checkpoints: the store, and the newest checkpoint's id and
/// offsets (a barrier names only partitions with new messages; the others keep theirs).
#[derive(Debug)]
pub struct Checkpointing {
    /// The site-local store.
    pub store: CheckpointStore,
    /// Id of the newest stored checkpoint (0: none).
    pub last_id: u64,
    /// Offsets of the newest stored checkpoint.
    pub offsets: Vec<SourceOffset>,
}

/// Name of the engine's section in a checkpoint.
pub const ENGINE_SECTION: &str = "engine";

/// Counters of the detection stage.
#[derive(Debug, Clone, Default)]
pub struct DetectStats {
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Size of the last checkpoint file, in bytes.
    pub last_checkpoint_bytes: u64,
    /// Encoding the engine state, in microseconds (last checkpoint).
    pub last_checkpoint_encode_us: u64,
    /// Writing it durably, in microseconds (last checkpoint).
    pub last_checkpoint_write_us: u64,
    /// Waiting for the broker to confirm alerts and late readings, in microseconds (last).
    pub last_checkpoint_flush_us: u64,
    /// The engine's counters.
    pub engine: EngineStats,
    /// Alert events written to Kafka.
    pub alerts_sent: u64,
    /// Late readings written to Kafka.
    pub late_sent: u64,
    /// Batches taken from the ingest.
    pub batches: u64,
}

/// A running detection stage.
pub struct Detect {
    stop: Arc<AtomicBool>,
    end_of_input: Arc<AtomicBool>,
    stats: Arc<Mutex<DetectStats>>,
    thread: Option<JoinHandle<Result<StreamEngine>>>,
}

/// Counts deliveries the broker refused, so that a checkpoint never covers a lost alert.
struct DeliveryCheck {
    failed: Arc<Mutex<Option<String>>>,
}

impl ClientContext for DeliveryCheck {}

impl ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result
            && let Ok(mut failed) = self.failed.lock()
        {
            use rdkafka::Message as _;
            failed.get_or_insert_with(|| format!("delivery to {} failed: {e}", m.topic()));
        }
    }
}


impl Detect {
    /// Starts the stage on `engine`, reading `batches`, writing to `brokers`.
    pub fn start(engine: StreamEngine, config: &DetectConfig, brokers: &str, batches: Receiver<ShardBatch>) -> Result<Self> {
        Self::start_checkpointed(engine, config, brokers, batches, None)
    }

    /// Like [`Detect::start`], checkpointing on every barrier when `checkpointing` is given
    /// (the ingest must then send barriers: its `checkpoint_interval` set).
    pub fn start_checkpointed(
        engine: StreamEngine,
        config: &DetectConfig,
        brokers: &str,
        batches: Receiver<ShardBatch>,
        checkpointing: Option<Checkpointing>,
    ) -> Result<Self> {
        let failed = Arc::new(Mutex::new(None));
        let producer: ThreadedProducer<DeliveryCheck> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            // Alerts are few and urgent: send each at once.
            .set("linger.ms", "0")
            .create_with_context(DeliveryCheck { failed: failed.clone() })
            .context("creating the alerts producer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let end_of_input = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(DetectStats::default()));
        let worker = Worker {
            engine,
            producer,
            config: config.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            end_of_input: end_of_input.clone(),
            checkpointing,
            held: Vec::new(),
            batches_since_checkpoint: 0,
            delivery_failed: failed,
        };
        let thread = std::thread::Builder::new().name("tessera-detect".into()).spawn(move || worker.run(batches))?;
        Ok(Self { stop, end_of_input, stats, thread: Some(thread) })
    }

    /// True once the stage's thread has ended (after a stop, or on an error such as a failed
    /// checkpoint write; [`Detect::stop`] returns it).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Counters so far.
    pub fn stats(&self) -> DetectStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Like [`Detect::stop`], but the input is complete (a finished replay): every window
    /// still open is closed, and its alerts written, before stopping. Replays are then
    /// independent of processing-time idleness.
    pub fn stop_at_end_of_input(self) -> Result<StreamEngine> {
        self.end_of_input.store(true, Ordering::Relaxed);
        self.stop()
    }

    /// Stops after the batches already queued, flushes the producer, and returns the engine
    /// (its tables stay queryable).
    pub fn stop(mut self) -> Result<StreamEngine> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("running").join().map_err(|_| anyhow::anyhow!("the detect thread panicked"))?
    }
}

impl Drop for Detect {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    engine: StreamEngine,
    producer: ThreadedProducer<DeliveryCheck>,
    config: DetectConfig,
    stats: Arc<Mutex<DetectStats>>,
    stop: Arc<AtomicBool>,
    end_of_input: Arc<AtomicBool>,
    checkpointing: Option<Checkpointing>,
    /// Acknowledgements held until a checkpoint covers their batches.
    held: Vec<BatchAck>,
    batches_since_checkpoint: u64,
    delivery_failed: Arc<Mutex<Option<String>>>,
}

impl Worker {
    fn run(mut self, batches: Receiver<ShardBatch>) -> Result<StreamEngine> {
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let tick = Duration::from_millis(100);
        loop {
            match batches.recv_timeout(tick) {
                Ok(ShardBatch { batch: rows, ack, barrier, .. }) => {
                    if rows.num_rows() > 0 {
                        let out = rt.block_on(self.engine.push(&rows, now_ms()))?;
                        self.publish(out)?;
                        self.batches_since_checkpoint += 1;
                        if let Ok(mut s) = self.stats.lock() {
                            s.batches += 1;
                        }
                    }
                    match self.checkpointing {
                        Some(_) => self.held.push(ack),
                        None => ack.ack(),
                    }
                    if let Some(barrier) = barrier
                        && self.checkpointing.is_some()
                    {
                        self.checkpoint(&barrier)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let out = rt.block_on(self.engine.tick(now_ms()))?;
            self.publish(out)?;
            if let Ok(mut s) = self.stats.lock() {
                s.engine = self.engine.stats();
            }
        }
        if self.end_of_input.load(Ordering::Relaxed) {
            let out = rt.block_on(self.engine.close_all(now_ms()))?;
            self.publish(out)?;
        }
        self.producer.flush(Duration::from_secs(30)).context("flushing alerts and late readings")?;
        Ok(self.engine)
    }

    /// Takes a checkpoint at `barrier`: everything sent so far confirmed, then the state
    /// and offsets written durably, then the held batches acknowledged.
    fn checkpoint(&mut self, barrier: &Barrier) -> Result<()> {
        let Some(cp) = self.checkpointing.as_mut() else { return Ok(()) };
        let mut offsets: BTreeMap<(String, i32), i64> = cp.offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.next_offset)).collect();
        let before = offsets.clone();
        for (topic, partition, next) in &barrier.offsets {
            let o = offsets.entry((topic.clone(), *partition)).or_insert(*next);
            *o = (*o).max(*next);
        }
        if self.batches_since_checkpoint == 0 && offsets == before && cp.last_id > 0 {
            // Nothing new: the stored checkpoint still covers everything.
            self.held.drain(..).for_each(BatchAck::ack);
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.producer.flush(Duration::from_secs(60)).context("checkpoint: waiting for the broker to confirm alerts and late readings")?;
        if let Some(why) = self.delivery_failed.lock().ok().and_then(|f| f.clone()) {
            anyhow::bail!("checkpoint: an alert or late reading was not delivered ({why}); stopping without committing past it");
        }
        let flushed = started.elapsed();
        let engine = self.engine.checkpoint().context("checkpoint: encoding the engine state")?;
        let encoded = started.elapsed() - flushed;
        let checkpoint = Checkpoint {
            id: cp.last_id + 1,
            created_ms: now_ms(),
            offsets: offsets.iter().map(|((topic, partition), next)| SourceOffset { topic: topic.clone(), partition: *partition, next_offset: *next }).collect(),
            sections: vec![(ENGINE_SECTION.to_string(), engine)],
        };
        let written = cp.store.write(&checkpoint).context("checkpoint")?;
        fail::fail_point!("detect-after-checkpoint-write");
        cp.last_id = checkpoint.id;
        cp.offsets = checkpoint.offsets;
        self.batches_since_checkpoint = 0;
        self.held.drain(..).for_each(BatchAck::ack);
        if let Ok(mut s) = self.stats.lock() {
            s.checkpoints += 1;
            s.last_checkpoint_bytes = written.bytes;
            s.last_checkpoint_flush_us = flushed.as_micros() as u64;
            s.last_checkpoint_encode_us = encoded.as_micros() as u64;
            s.last_checkpoint_write_us = written.elapsed.as_micros() as u64;
        }
        tracing::debug!(id = cp.last_id, bytes = written.bytes, epoch = barrier.epoch, "checkpoint written");
        Ok(())
    }

    fn publish(&mut self, out: StepOutput) -> Result<()> {
        let mut alerts = 0;
        for event in &out.alerts {
            let payload = serde_json::to_vec(event)?;
            self.send(&self.config.alerts_topic, &event.motor_id, &payload, None)?;
            alerts += 1;
        }
        let mut late = 0;
        for batch in &out.late {
            late += self.publish_late(batch)?;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.alerts_sent += alerts;
            s.late_sent += late;
        }
        Ok(())
    }

    fn publish_late(&self, batch: &RecordBatch) -> Result<u64> {
        let telemetry = batch.project(&(0..tessera_core::telemetry_schema().fields().len()).collect::<Vec<_>>())?;
        let late_for = batch.column(batch.num_columns() - 1).as_any().downcast_ref::<arrow_array::StringArray>().cloned();
        for (i, r) in readings_from_batch(&telemetry).iter().enumerate() {
            let payload = serde_json::to_vec(&reading_json(r))?;
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
                Err((e, _)) => return Err(anyhow::anyhow!("writing to {topic}: {e}")),
            }
        }
        anyhow::bail!("writing to {topic}: the producer queue stayed full for 30 s")
    }
}
