//! The running ingest: a consumer thread and a decoder thread joined by a bounded channel of
//! message chunks, with backpressure, commits and rebalance handling. This module starts and
//! stops them ([`Ingest`]), or hands their loops to a host that runs its own threads
//! ([`Ingest::prepare`], [`IngestLoop`], [`IngestHandle`]); its parts:
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
//! - `topic_watch`: which subscribed topics do not exist yet, looked for every second until
//!   they do (librdkafka alone would wait for its 5-minute metadata refresh);
//! - `decoder`: the decoder thread — decodes and validates each message, dead-letters what is
//!   invalid, shards readings by motor into Arrow builders, and sends full or aged batches
//!   downstream on the caller's bounded channel, waiting while it is full (that is the
//!   backpressure). Once the ingest is stopping it waits at most `drain_timeout`, so that
//!   `stop` always returns.
//!
//! Dependencies point one way: `rebalance` → `consumer` → `memory_budget`, `topic_watch`, `chunk` →
//! `downstream`; `decoder` → `chunk`; this module wires them all.

mod chunk;
mod consumer;
mod decoder;
mod downstream;
mod memory_budget;
mod rebalance;
mod topic_watch;

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

/// A running ingest that runs its own two threads ([`Ingest::start`]); a host that owns its
/// threads uses [`Ingest::prepare`] instead.
pub struct Ingest {
    handle: IngestHandle,
    consumer: JoinHandle<Result<()>>,
    decoder: JoinHandle<Result<()>>,
}

/// What controls a prepared ingest: its counters and the request to stop. Dropping it asks the
/// loops to stop too.
pub struct IngestHandle {
    stop: Arc<AtomicBool>,
    metrics: Arc<IngestMetrics>,
}

/// One of the ingest's two blocking loops (the consumer, then the decoder), for a host that
/// runs it on a thread of its own. Dropped without running, it never starts.
pub struct IngestLoop {
    name: &'static str,
    body: Box<dyn FnOnce() -> Result<()> + Send>,
}

impl IngestLoop {
    /// `consume` or `decode`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the loop until the ingest is asked to stop (and has handed everything on), or an
    /// error stops it.
    pub fn run(self) -> Result<()> {
        (self.body)()
    }
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
        let (handle, [consumer, decoder]) = Self::prepare(config, out, states)?;
        let spawn = |l: IngestLoop| {
            std::thread::Builder::new()
                .name(format!("tessera-{}", l.name))
                .spawn(move || l.run())
                .map_err(IngestError::ThreadStart)
        };
        let decoder = spawn(decoder)?;
        let consumer = spawn(consumer)?;
        Ok(Ingest { handle, consumer, decoder })
    }

    /// Validates the config, connects and subscribes, and returns the two loops for the
    /// caller to run on threads it owns (the consumer's, then the decoder's), with the handle
    /// that stops them. With `states`, as [`Ingest::start_with_states`].
    pub fn prepare(
        config: IngestConfig,
        out: SyncSender<ShardBatch>,
        states: Option<Arc<dyn PartitionStates>>,
    ) -> Result<(IngestHandle, [IngestLoop; 2])> {
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
        let decoder = IngestLoop { name: "decode", body: Box::new(move || decoder.run(work_rx)) };
        let consumer = {
            let stop = stop.clone();
            IngestLoop { name: "consume", body: Box::new(move || consumer::run(consumer, &shared, &stop)) }
        };
        Ok((IngestHandle { stop, metrics }, [consumer, decoder]))
    }

    /// The live counters.
    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        self.handle.metrics()
    }

    /// True once a thread has ended (after [`stop`](Self::stop) or on an error).
    pub fn is_finished(&self) -> bool {
        self.consumer.is_finished() || self.decoder.is_finished()
    }

    /// Stops gracefully: hands on what was consumed, waits up to `drain_timeout` for it to be
    /// acknowledged, commits, leaves the group. Returns the final counters, or the error that
    /// stopped the ingest.
    pub fn stop(self) -> Result<IngestStats> {
        self.handle.request_stop();
        let consumed = join(self.consumer);
        let decoded = join(self.decoder);
        consumed.and(decoded)?;
        Ok(self.handle.metrics.snapshot())
    }
}

impl IngestHandle {
    /// The live counters.
    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// Asks the loops to stop gracefully (as [`Ingest::stop`] does); they end once everything
    /// consumed is handed on and committed, or `drain_timeout` has passed.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for IngestHandle {
    fn drop(&mut self) {
        self.request_stop();
    }
}

fn join(handle: JoinHandle<Result<()>>) -> Result<()> {
    handle.join().map_err(|_| IngestError::ThreadPanicked)?
}
