//! The running ingest: a consumer thread and a decoder thread joined by a bounded channel of
//! message chunks, with backpressure, commits and rebalance handling. This module starts and
//! stops them ([`Ingest`]); its parts:
//!
//! - `downstream`: what goes downstream ([`ShardBatch`], [`BatchAck`], [`Control`],
//!   [`Barrier`]) and where assigned partitions' checkpoints come from ([`PartitionStates`]);
//! - `chunk`: the work the consumer thread hands the decoder thread (chunks of messages, and
//!   orders to flush or to send a barrier or checkpoints);
//! - `consumer`: the consumer thread — polls Kafka, ships chunks, pauses its partitions while
//!   the decoder's queue is full, sends barriers, commits what the
//!   [`OffsetTracker`] allows every `commit_interval`, and synchronously when partitions are
//!   revoked or the ingest stops — after handing everything on and waiting (up to
//!   `drain_timeout`) for downstream to acknowledge it;
//! - `rebalance`: the consumer's librdkafka context, which runs the ingest's steps around a
//!   rebalance (hand over on revoke, start at the checkpoints on assignment);
//! - `memory_budget`: when to pause because the process is near `memory_budget_mb`;
//! - `decoder`: the decoder thread — decodes and validates each message, dead-letters what is
//!   invalid, shards readings by motor into Arrow builders, and sends full or aged batches
//!   downstream on the caller's bounded channel, waiting while it is full (that is the
//!   backpressure). Once the ingest is stopping it waits at most `drain_timeout`, so that
//!   `stop` always returns.
//!
//! Dependencies point one way: `rebalance` → `consumer` → `memory_budget`, `chunk` →
//! `downstream`; `decoder` → `chunk`; this module wires them all.

mod chunk;
mod consumer;
mod decoder;
mod downstream;
mod memory_budget;
mod rebalance;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use rdkafka::consumer::{BaseConsumer, Consumer};

pub use downstream::{Barrier, BatchAck, Control, PartitionStart, PartitionStates, ShardBatch};

use self::consumer::ConsumerState;
use self::decoder::Decoder;
use self::rebalance::IngestContext;
use crate::dead_letter::DeadLetterWriter;
use crate::metrics::IngestMetrics;
use crate::offsets::OffsetTracker;
use crate::{IngestConfig, IngestError, IngestStats, Result};

/// A running ingest.
pub struct Ingest {
    stop: Arc<AtomicBool>,
    metrics: Arc<IngestMetrics>,
    consumer: JoinHandle<Result<()>>,
    decoder: JoinHandle<Result<()>>,
}

impl Ingest {
    /// Validates the config, connects, subscribes and starts the two threads. Batches go to
    /// `out`; its capacity is the number of batches downstream may fall behind by.
    pub fn start(config: IngestConfig, out: SyncSender<ShardBatch>) -> Result<Ingest> {
        Self::start_inner(config, out, None)
    }

    /// Like [`Ingest::start`], with per-partition checkpoints: each assigned partition starts
    /// at its checkpoint's offset, and its checkpoint goes downstream ([`Control::Assigned`])
    /// ahead of its readings.
    pub fn start_with_states(
        config: IngestConfig,
        out: SyncSender<ShardBatch>,
        states: Arc<dyn PartitionStates>,
    ) -> Result<Ingest> {
        Self::start_inner(config, out, Some(states))
    }

    fn start_inner(
        config: IngestConfig,
        out: SyncSender<ShardBatch>,
        states: Option<Arc<dyn PartitionStates>>,
    ) -> Result<Ingest> {
        config.validate()?;
        let metrics = Arc::new(IngestMetrics::default());
        let tracker = Arc::new(OffsetTracker::default());
        let dead_letters = DeadLetterWriter::new(&config, tracker.clone(), metrics.clone())?;
        let (work_tx, work_rx) = sync_channel(config.max_chunks_in_flight);
        let shared = Arc::new(ConsumerState::new(config.clone(), tracker.clone(), metrics.clone(), work_tx, states));

        let consumer: BaseConsumer<IngestContext> =
            consumer::client_config(&config).create_with_context(IngestContext::new(shared.clone()))?;
        let topic_refs: Vec<&str> = shared.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;
        let stop = Arc::new(AtomicBool::new(false));

        let decoder = Decoder::new(config, tracker, metrics.clone(), dead_letters, out, stop.clone());
        let decoder = spawn("tessera-decode", move || decoder.run(work_rx))?;
        let consumer = {
            let (stop, shared) = (stop.clone(), shared);
            spawn("tessera-consume", move || consumer::run(consumer, &shared, &stop))?
        };
        Ok(Ingest { stop, metrics, consumer, decoder })
    }

    /// The live counters.
    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// True once a thread has ended (after [`stop`](Self::stop) or on an error).
    pub fn is_finished(&self) -> bool {
        self.consumer.is_finished() || self.decoder.is_finished()
    }

    /// Stops gracefully: hands on what was consumed, waits up to `drain_timeout` for it to be
    /// acknowledged, commits, leaves the group. Returns the final counters, or the error that
    /// stopped the ingest.
    pub fn stop(self) -> Result<IngestStats> {
        self.stop.store(true, Ordering::SeqCst);
        let consumed = join(self.consumer);
        let decoded = join(self.decoder);
        consumed.and(decoded)?;
        Ok(self.metrics.snapshot())
    }
}

fn spawn(name: &str, f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<JoinHandle<Result<()>>> {
    std::thread::Builder::new().name(name.into()).spawn(f).map_err(IngestError::ThreadStart)
}

fn join(handle: JoinHandle<Result<()>>) -> Result<()> {
    handle.join().map_err(|_| IngestError::ThreadPanicked)?
}
