//! The decoder thread: decodes and validates each message of a chunk, dead-letters what is
//! invalid (and, with checkpoints, readings already taken: [`crate::repeats`]), shards readings
//! by motor into Arrow builders, and sends full or aged batches downstream on the caller's
//! bounded channel, waiting while it is full (that is the backpressure). Once the ingest is
//! stopping it waits at most `drain_timeout`, so that `stop` always returns.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use tessera_core::RejectReason;

use super::chunk::{Chunk, Work};
use super::downstream::{Barrier, BatchAck, Control, ShardBatch};
use crate::batch::{FlushedBatch, ShardedBatcher};
use crate::dead_letter::{DeadLetterWriter, Rejected};
use crate::decode::{MessageLimits, Readings, decode_message};
use crate::metrics::IngestMetrics;
use crate::offsets::{Halt, OffsetTracker};
use crate::repeats::RepeatGuard;
use crate::{IngestConfig, IngestError, Result};

/// The decoder thread's state.
pub(super) struct Decoder {
    config: IngestConfig,
    /// The config's topics' names, by index.
    topics: Vec<String>,
    limits: MessageLimits,
    batcher: ShardedBatcher,
    tracker: Arc<OffsetTracker>,
    metrics: Arc<IngestMetrics>,
    dead_letters: DeadLetterWriter,
    out: SyncSender<ShardBatch>,
    /// Set when the ingest is stopping: downstream then gets `drain_timeout` to take each
    /// remaining batch, so that `stop` returns even if nobody reads any more.
    stopping: Arc<AtomicBool>,
    /// When stopping, the moment after which batches downstream will not take are left.
    give_up_at: Cell<Option<Instant>>,
    /// With barriers: the partition each motor's readings last came from (topic index,
    /// partition), and the motors new there since the last barrier.
    motor_partitions: HashMap<String, (usize, i32)>,
    /// Readings taken per motor, to refuse repeats (with checkpoints, where revocations are
    /// known; see [`crate::repeats`]).
    repeats: RepeatGuard,
    new_motors: Vec<(String, (usize, i32))>,
    /// The newest event time accepted per (topic index, partition) in the chunk under way,
    /// published to the metrics once per chunk (event-time freshness).
    newest_event_ms: HashMap<(usize, i32), i64>,
    /// The consumed topics, comma-separated (the batches' `messaging.destination.name`).
    destinations: String,
}

impl Decoder {
    /// A decoder sending its batches to `out`; `stopping` is set when the ingest stops.
    pub(super) fn new(
        config: IngestConfig,
        tracker: Arc<OffsetTracker>,
        metrics: Arc<IngestMetrics>,
        dead_letters: DeadLetterWriter,
        out: SyncSender<ShardBatch>,
        stopping: Arc<AtomicBool>,
    ) -> Self {
        Self {
            batcher: ShardedBatcher::new(config.shards, config.batch_max_rows, config.batch_max_age),
            limits: MessageLimits {
                max_message_bytes: config.max_message_bytes,
                max_readings_per_message: config.max_readings_per_message,
            },
            topics: config.topics.iter().map(|t| t.name.clone()).collect(),
            destinations: config.topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(","),
            config,
            tracker,
            metrics,
            dead_letters,
            out,
            stopping,
            give_up_at: Cell::new(None),
            motor_partitions: HashMap::new(),
            repeats: RepeatGuard::default(),
            new_motors: Vec::new(),
            newest_event_ms: HashMap::new(),
        }
    }

    /// The decoder thread: takes work until the consumer closes the queue, then flushes.
    pub(super) fn run(mut self, work: Receiver<Work>) -> Result<()> {
        let tick = (self.config.batch_max_age / 4).max(Duration::from_millis(1));
        let result = loop {
            let step = match work.recv_timeout(tick) {
                Ok(Work::Chunk(chunk)) => self.process(&chunk),
                Ok(Work::Drain) => self.emit_all(),
                Ok(Work::Barrier(barrier)) => self.emit_all().and_then(|()| self.emit_barrier(barrier)),
                // Behind everything decoded so far (a partition revoked and assigned back must
                // not have its old readings land after its checkpoint is restored).
                Ok(Work::Assigned(starts)) => {
                    self.emit_all().and_then(|()| self.send_control(Control::Assigned(starts)))
                }
                Err(RecvTimeoutError::Timeout) => Ok(()),
                Err(RecvTimeoutError::Disconnected) => break self.emit_all(),
            };
            if let Err(e) = step.and_then(|()| self.emit_aged()) {
                break Err(e);
            }
        };
        if result.is_err() {
            self.tracker.fail(Halt::DecoderFailed);
        }
        self.dead_letters.flush(self.config.drain_timeout);
        result
    }

    fn process(&mut self, chunk: &Chunk) -> Result<()> {
        let now_ms = tessera_core::now_ms();
        let now = Instant::now();
        let bytes = |r: &Range<usize>| &chunk.data[r.clone()];
        for m in &chunk.messages {
            let topic = &self.config.topics[m.topic];
            // A message that makes decoding panic (a bug it triggers) is isolated to the
            // dead-letter topic with the panic's message, instead of crash-looping the partition.
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fail::fail_point!("ingest-decode", |payload_marker: Option<String>| {
                    if payload_marker.is_some_and(|marker| bytes(&m.payload).windows(marker.len()).any(|w| w == marker.as_bytes())) {
                        panic!("injected poison")
                    }
                    decode_message(bytes(&m.payload), m.content_type.as_ref().map(bytes), topic.encoding, self.limits, &self.config.validation, now_ms)
                });
                decode_message(bytes(&m.payload), m.content_type.as_ref().map(bytes), topic.encoding, self.limits, &self.config.validation, now_ms)
            }))
            .unwrap_or_else(|panic| {
                let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "panic".into());
                tracing::error!(partition = m.partition, offset = m.offset, error = %why, "decoding a message panicked; dead-lettering it");
                Err(RejectReason::Poison(why))
            });
            let (readings, mut rejected, whole) = match decoded {
                Ok(d) => (d.readings, d.rejected, None),
                Err(reason) => (Readings::None, Vec::new(), Some(reason)),
            };
            // Each valid reading's index in the message skips the invalid ones' (ascending).
            let mut invalid = rejected.iter().map(|(i, _)| *i).peekable();
            let (mut index, mut accepted, mut repeated) = (0, 0, Vec::new());
            let mut newest_ms = i64::MIN;
            for reading in readings.iter() {
                while invalid.next_if_eq(&index).is_some() {
                    index += 1;
                }
                let at = index;
                index += 1;
                if self.tracks_motors() {
                    // With checkpoints, where the decoder learns of revocations (so a partition
                    // read again after one is not taken for a repeat): readings already taken
                    // (same motor, sequence number and event time) are rejected.
                    if let Err(reason) = self.repeats.check(&reading) {
                        repeated.push((at, reason));
                        continue;
                    }
                    let here = (m.topic, m.partition);
                    if self.motor_partitions.get(reading.motor_id) != Some(&here) {
                        self.motor_partitions.insert(reading.motor_id.to_string(), here);
                        self.new_motors.push((reading.motor_id.to_string(), here));
                    }
                }
                newest_ms = newest_ms.max(reading.event_time_ms);
                let pushed = self.batcher.push(&reading, chunk.id, now);
                if let Some(tag) = pushed.new_tag {
                    self.tracker.hold(tag);
                }
                if let Some(flushed) = pushed.flushed {
                    self.emit(flushed)?;
                }
                accepted += 1;
            }
            drop(invalid);
            self.metrics.readings_accepted.fetch_add(accepted, Relaxed);
            if accepted > 0 {
                let newest = self.newest_event_ms.entry((m.topic, m.partition)).or_insert(i64::MIN);
                *newest = (*newest).max(newest_ms);
            }
            if !repeated.is_empty() {
                rejected.extend(repeated);
                rejected.sort_by_key(|(i, _)| *i);
            }
            let (reason_code, detail, indices) = match whole {
                Some(reason) => {
                    self.metrics.reject(&reason);
                    (Some(reason.code()), reason.to_string(), None)
                }
                None if rejected.is_empty() => (None, String::new(), None),
                None => {
                    rejected.iter().for_each(|(_, r)| self.metrics.reject(r));
                    let detail =
                        rejected.iter().map(|(i, r)| format!("reading {i}: {r}")).collect::<Vec<_>>().join("\n");
                    let indices = rejected.iter().map(|(i, _)| i.to_string()).collect::<Vec<_>>().join(",");
                    (Some(rejected[0].1.code()), detail, Some(indices))
                }
            };
            if let Some(reason_code) = reason_code {
                let headers = chunk.headers[m.headers.clone()]
                    .iter()
                    .map(|(k, v)| (std::str::from_utf8(bytes(k)).unwrap_or("?"), v.as_ref().map(bytes)))
                    .collect();
                let rejected = Rejected {
                    topic: &self.topics[m.topic],
                    partition: m.partition,
                    offset: m.offset,
                    key: m.key.as_ref().map(bytes),
                    payload: bytes(&m.payload),
                    headers,
                    reason_code,
                    detail,
                    rejected_indices: indices,
                };
                self.dead_letters.send(rejected, chunk.id)?;
            }
        }
        self.tracker.release(&[chunk.id]);
        if !self.newest_event_ms.is_empty() {
            let mut newest = self.metrics.newest_event_ms.lock().unwrap_or_else(|p| p.into_inner());
            for ((topic, partition), t) in self.newest_event_ms.drain() {
                let slot = newest.entry((self.topics[topic].clone(), partition)).or_insert(i64::MIN);
                *slot = (*slot).max(t);
            }
        }
        Ok(())
    }

    /// Whether barriers go downstream, and with them the partition of each motor.
    fn tracks_motors(&self) -> bool {
        !self.config.checkpoint_interval.is_zero()
    }

    /// Sends a barrier as an empty batch after everything flushed so far, with the motors new
    /// to a partition since the last one; then forgets the revoked partitions' motors (should
    /// one come back, it is reported again).
    fn emit_barrier(&mut self, mut barrier: Barrier) -> Result<()> {
        barrier.motors = std::mem::take(&mut self.new_motors)
            .into_iter()
            .map(|(m, (t, p))| (m, (self.topics[t].clone(), p)))
            .collect();
        if !barrier.revoked.is_empty() {
            let topics = &self.topics;
            let repeats = &mut self.repeats;
            self.motor_partitions.retain(|motor, (t, p)| {
                let keep = !barrier.revoked.iter().any(|(rt, rp)| rt == &topics[*t] && rp == p);
                if !keep {
                    repeats.forget(motor);
                }
                keep
            });
        }
        self.send_control(Control::Barrier(barrier))
    }

    /// Sends a control as an empty batch.
    fn send_control(&self, control: Control) -> Result<()> {
        let empty = RecordBatch::new_empty(tessera_core::telemetry_schema());
        self.send(ShardBatch {
            shard: 0,
            batch: empty,
            ack: BatchAck::new(Vec::new(), self.tracker.clone()),
            control: Some(control),
            span: tracing::Span::none(),
        })
    }

    fn emit(&self, flushed: FlushedBatch) -> Result<()> {
        let ack = BatchAck::new(flushed.tags, self.tracker.clone());
        // OpenTelemetry's messaging conventions: a Kafka consumer processing a batch.
        let span = tracing::info_span!(
            "ingest.batch",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.consumer.group.name = %self.config.group_id,
            messaging.destination.name = %self.destinations,
            messaging.batch.message_count = flushed.batch.num_rows(),
            shard = flushed.shard,
            rows = flushed.batch.num_rows()
        );
        self.send(ShardBatch { shard: flushed.shard, batch: flushed.batch, ack, control: None, span })
    }

    fn send(&self, batch: ShardBatch) -> Result<()> {
        let rows = batch.batch.num_rows() as u64;
        let data = u64::from(batch.control.is_none());
        let mut batch = batch;
        loop {
            match self.out.try_send(batch) {
                Ok(()) => {
                    self.metrics.batches.fetch_add(data, Relaxed);
                    self.metrics.rows.fetch_add(rows, Relaxed);
                    return Ok(());
                }
                Err(TrySendError::Full(back)) => {
                    batch = back;
                    if self.stopping.load(Ordering::Relaxed) {
                        let give_up_at =
                            self.give_up_at.get().unwrap_or_else(|| Instant::now() + self.config.drain_timeout);
                        self.give_up_at.set(Some(give_up_at));
                        if Instant::now() >= give_up_at {
                            // Downstream stopped reading: leave the batch unacknowledged, so
                            // its offsets stay uncommitted and it is consumed again later.
                            tracing::warn!(
                                rows,
                                "stopping: downstream took no batch for drain_timeout; leaving it uncommitted"
                            );
                            batch.ack.leave_unacknowledged();
                            return Ok(());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(back)) => {
                    // Nobody will acknowledge it: forget the batch quietly, the error says why.
                    back.ack.leave_unacknowledged();
                    return Err(IngestError::DownstreamClosed);
                }
            }
        }
    }

    fn emit_aged(&mut self) -> Result<()> {
        self.batcher.flush_aged(Instant::now()).into_iter().try_for_each(|b| self.emit(b))
    }

    fn emit_all(&mut self) -> Result<()> {
        self.batcher.flush_all().into_iter().try_for_each(|b| self.emit(b))
    }
}
