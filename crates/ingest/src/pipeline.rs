//! The running ingest: a consumer thread and a decoder thread joined by a bounded channel of
//! message chunks, with backpressure, commits and rebalance handling.
//!
//! Consumer thread: polls Kafka, copies each message into the open chunk (one arena per
//! chunk, no allocation per message), ships full or lingering chunks to the decoder, and
//! pauses its partitions while the decoder's queue is full. It commits what the
//! [`OffsetTracker`] allows, every `commit_interval`, and synchronously when partitions are
//! revoked or the ingest stops — after handing everything on and waiting (up to
//! `drain_timeout`) for downstream to acknowledge it.
//!
//! Decoder thread: decodes and validates each message, dead-letters what is invalid, shards
//! readings by motor into Arrow builders, and sends full or aged batches downstream on the
//! caller's bounded channel, waiting while it is full (that is the backpressure). Once the
//! ingest is stopping it waits at most `drain_timeout`, so that `stop` always returns.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use tessera_core::RejectReason;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientConfig, ClientContext, Message, Offset};

use crate::batch::{FlushedBatch, ShardedBatcher};
use crate::dead_letter::{DeadLetterWriter, Rejected};
use crate::decode::{decode_message, DecodedMessage, MessageLimits};
use crate::metrics::IngestMetrics;
use crate::offsets::{OffsetTracker, TopicPartition};
use crate::{IngestConfig, IngestError, IngestStats, Result};

/// A checkpoint barrier: every message consumed before it is in the batches sent before it
/// (on the same channel), and none after it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Barrier {
    /// Counts barriers from 1 since the ingest started.
    pub epoch: u64,
    /// (topic, partition, next offset) of every partition with messages handed on since the
    /// start, as of the barrier; partitions revoked since are left out.
    pub offsets: Vec<(String, i32, i64)>,
    /// Motors seen for the first time (or on another partition than before) since the last
    /// barrier, with the partition their readings came from: a partition's checkpoint holds
    /// the state of its motors.
    pub motors: Vec<(String, TopicPartition)>,
    /// Partitions being revoked at this barrier: checkpoint them (unless `lost`), then forget
    /// their motors; another node takes them over from that checkpoint.
    pub revoked: Vec<TopicPartition>,
    /// The revoked partitions were lost, not handed over (the group gave up on this node): they
    /// may already be another node's, so they must not be checkpointed any more.
    pub lost: bool,
}

/// A newly assigned partition, as its checkpoint left it.
pub struct PartitionStart {
    /// The partition.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
    /// The next offset its checkpoint does not hold: consumption starts there (not at the
    /// group's committed offset, which may lag the checkpoint). `None`: no checkpoint; the
    /// committed offset, else the earliest.
    pub resume_at: Option<i64>,
    /// The checkpoint, for downstream to restore before the partition's first reading; opaque
    /// to the ingest.
    pub state: Option<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for PartitionStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionStart")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("resume_at", &self.resume_at)
            .field("state", &self.state.is_some())
            .finish()
    }
}

/// Where assigned partitions' checkpoints come from (the node's per-partition state store).
pub trait PartitionStates: Send + Sync {
    /// Called on the consumer thread when `partitions` are assigned, before any of their
    /// messages is fetched; returns a start for each. An error stops the ingest with it.
    fn assigned(&self, partitions: &[TopicPartition]) -> std::result::Result<Vec<PartitionStart>, String>;
}

/// What an empty [`ShardBatch`] may carry instead of rows.
#[derive(Debug)]
pub enum Control {
    /// A checkpoint barrier.
    Barrier(Barrier),
    /// Partitions were assigned: their checkpoints come before any of their readings.
    Assigned(Vec<PartitionStart>),
}

/// One shard's batch of readings, handed downstream. Call [`ack`](Self::ack) once it is
/// safely processed: only then can the Kafka offsets behind its rows be committed.
///
/// A barrier or an assignment comes as a batch with no rows and `control` set.
#[derive(Debug)]
pub struct ShardBatch {
    /// The motor shard (`xxh3_64(motor_id) % shards`) of every row.
    pub shard: u32,
    /// The readings, in [`tessera_core::telemetry_schema`]; a motor's rows are in the order
    /// they were consumed.
    pub batch: RecordBatch,
    /// The acknowledgement to give once the batch is handled.
    pub ack: BatchAck,
    /// Set on an (empty) batch that carries a barrier or an assignment.
    pub control: Option<Control>,
    /// The `ingest.batch` span: from the flush to the batch's end downstream (the detection
    /// stage's spans are its children, so a trace follows readings from ingest to alert).
    pub span: tracing::Span,
}

impl ShardBatch {
    /// Acknowledges the batch and returns its rows.
    pub fn ack(self) -> RecordBatch {
        self.ack.ack();
        self.batch
    }
}

/// The acknowledgement of one [`ShardBatch`]. Dropping it unacknowledged keeps the batch's
/// offsets uncommitted (they will be consumed again after a restart or rebalance).
#[derive(Debug)]
pub struct BatchAck {
    chunks: Vec<u64>,
    tracker: Arc<OffsetTracker>,
    done: bool,
}

impl BatchAck {
    /// Marks the batch as handled.
    pub fn ack(mut self) {
        self.tracker.release(&self.chunks);
        self.done = true;
    }
}

impl Drop for BatchAck {
    fn drop(&mut self) {
        if !self.done && !std::thread::panicking() {
            tracing::warn!("a shard batch was dropped unacknowledged; its offsets stay uncommitted");
        }
    }
}

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
    pub fn start_with_states(config: IngestConfig, out: SyncSender<ShardBatch>, states: Arc<dyn PartitionStates>) -> Result<Ingest> {
        Self::start_inner(config, out, Some(states))
    }

    fn start_inner(config: IngestConfig, out: SyncSender<ShardBatch>, states: Option<Arc<dyn PartitionStates>>) -> Result<Ingest> {
        config.validate()?;
        let metrics = Arc::new(IngestMetrics::default());
        let tracker = Arc::new(OffsetTracker::default());
        let dead_letters = DeadLetterWriter::new(&config, tracker.clone(), metrics.clone())?;
        let (work_tx, work_rx) = sync_channel(config.max_chunks_in_flight);
        let topics: Vec<String> = config.topics.iter().map(|t| t.name.clone()).collect();
        let shared = Arc::new(Shared {
            chunk_linger: (config.batch_max_age / 10).clamp(Duration::from_millis(1), Duration::from_millis(50)),
            config: config.clone(),
            tracker: tracker.clone(),
            metrics: metrics.clone(),
            work_tx: Mutex::new(Some(work_tx)),
            open: Mutex::new(OpenChunk::default()),
            unsent: Mutex::new(None),
            paused: AtomicBool::new(false),
            topics: topics.clone(),
            shipped: Mutex::new(BTreeMap::new()),
            states,
            failure: Mutex::new(None),
            last_message: Mutex::new(HashMap::new()),
            next_offset: Mutex::new(HashMap::new()),
            assigned: Mutex::new(std::collections::HashSet::new()),
            barriers: AtomicU64::new(0),
        });

        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.partition.eof", "false")
            // Bounded prefetch (memory), and a short back-off once it is full: librdkafka's
            // default (1 s) idles the consumer for a second whenever a partition's queue
            // fills, which cut throughput 4x in the end-to-end bench.
            .set("queued.max.messages.kbytes", "16384")
            .set("fetch.queue.backoff.ms", "10")
            // librdkafka's statistics every 5 s: the consumer lag the node reports.
            .set("statistics.interval.ms", "5000");
        for (k, v) in &config.kafka {
            client.set(k, v);
        }
        let consumer: BaseConsumer<IngestContext> =
            client.create_with_context(IngestContext { shared: shared.clone() })?;
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;
        let stop = Arc::new(AtomicBool::new(false));

        let decoder = Decoder {
            batcher: ShardedBatcher::new(config.shards, config.batch_max_rows, config.batch_max_age),
            limits: MessageLimits {
                max_message_bytes: config.max_message_bytes,
                max_readings_per_message: config.max_readings_per_message,
            },
            config,
            tracker,
            metrics: metrics.clone(),
            dead_letters,
            out,
            topics,
            stopping: stop.clone(),
            give_up_at: std::cell::Cell::new(None),
            motor_partitions: HashMap::new(),
            repeats: Default::default(),
            new_motors: Vec::new(),
        };
        let decoder = spawn("tessera-decode", move || decoder.run(work_rx))?;
        let consumer = {
            let (stop, shared) = (stop.clone(), shared);
            spawn("tessera-consume", move || run_consumer(consumer, &shared, &stop))?
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
    std::thread::Builder::new().name(name.into()).spawn(f).map_err(|e| IngestError::Thread(e.to_string()))
}

fn join(handle: JoinHandle<Result<()>>) -> Result<()> {
    handle.join().map_err(|_| IngestError::Thread("an ingest thread panicked".into()))?
}

enum Work {
    Chunk(Chunk),
    /// Flush every shard's open batch now.
    Drain,
    /// Flush every shard's open batch, then send the barrier.
    Barrier(Barrier),
    /// Send the assigned partitions' checkpoints downstream.
    Assigned(Vec<PartitionStart>),
}

/// Messages copied out of Kafka, ready for decoding.
#[derive(Default)]
struct Chunk {
    id: u64,
    data: Vec<u8>,
    messages: Vec<MessageMeta>,
    headers: Vec<(Range<usize>, Option<Range<usize>>)>,
}

struct MessageMeta {
    topic: usize,
    partition: i32,
    offset: i64,
    key: Option<Range<usize>>,
    payload: Range<usize>,
    headers: Range<usize>,
    content_type: Option<Range<usize>>,
}

/// The chunk being filled by the consumer thread.
#[derive(Default)]
struct OpenChunk {
    chunk: Chunk,
    last_offsets: Vec<((usize, i32), i64)>,
    opened_at: Option<Instant>,
}

impl OpenChunk {
    fn push(&mut self, m: &BorrowedMessage<'_>, topic: usize) {
        let c = &mut self.chunk;
        let mut put = |bytes: &[u8]| {
            let start = c.data.len();
            c.data.extend_from_slice(bytes);
            start..c.data.len()
        };
        let key = m.key().map(&mut put);
        let payload = put(m.payload().unwrap_or_default());
        let header_start = c.headers.len();
        let mut content_type = None;
        if let Some(headers) = m.headers() {
            for h in headers.iter() {
                let name = put(h.key.as_bytes());
                let value = h.value.map(&mut put);
                if h.key.eq_ignore_ascii_case("content-type") {
                    content_type = value.clone();
                }
                c.headers.push((name, value));
            }
        }
        c.messages.push(MessageMeta {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key,
            payload,
            headers: header_start..c.headers.len(),
            content_type,
        });
        let tp = (topic, m.partition());
        match self.last_offsets.iter_mut().find(|(k, _)| *k == tp) {
            Some((_, last)) => *last = (*last).max(m.offset()),
            None => self.last_offsets.push((tp, m.offset())),
        }
        self.opened_at.get_or_insert_with(Instant::now);
    }
}

/// State shared by the consumer loop and the rebalance callbacks (which run inside `poll`,
/// on the consumer thread).
struct Shared {
    config: IngestConfig,
    topics: Vec<String>,
    tracker: Arc<OffsetTracker>,
    metrics: Arc<IngestMetrics>,
    work_tx: Mutex<Option<SyncSender<Work>>>,
    open: Mutex<OpenChunk>,
    /// A sealed chunk the decoder had no room for yet.
    unsent: Mutex<Option<Chunk>>,
    paused: AtomicBool,
    chunk_linger: Duration,
    /// Next offset of each partition past the chunks handed to the decoder (barrier offsets).
    shipped: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Where assigned partitions' checkpoints come from.
    states: Option<Arc<dyn PartitionStates>>,
    /// Why the ingest must stop (set in a rebalance callback, which cannot return an error).
    failure: Mutex<Option<String>>,
    /// When each assigned partition's last message arrived (topic index, partition), for the
    /// stall metric; a partition leaves it when it is assigned anew or revoked.
    last_message: Mutex<HashMap<(usize, i32), Instant>>,
    /// The offset each assigned partition's next message should have (topic index, partition):
    /// past its last message, or its checkpoint's offset before the first. A message beyond it
    /// means offsets were skipped (see [`IngestStats::offsets_skipped`]).
    next_offset: Mutex<HashMap<(usize, i32), i64>>,
    /// The partitions assigned now (topic index, partition): a message of any other (fetched
    /// before its partition was revoked) is dropped, as the partition's new owner reads it.
    assigned: Mutex<std::collections::HashSet<(usize, i32)>>,
    /// Barriers sent so far (the last epoch).
    barriers: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Seals the open chunk if it is full or old enough (or `force`), and tries to hand the
    /// sealed chunk to the decoder. Returns false if the decoder had no room.
    fn ship(&self, force: bool) -> bool {
        {
            let mut unsent = lock(&self.unsent);
            if unsent.is_none() {
                let mut open = lock(&self.open);
                let due = open.chunk.messages.len() >= self.config.chunk_max_messages
                    || open.opened_at.is_some_and(|t| t.elapsed() >= self.chunk_linger);
                if open.chunk.messages.is_empty() || !(force || due) {
                    return true;
                }
                let open = std::mem::take(&mut *open);
                let offsets: Vec<(TopicPartition, i64)> = open.last_offsets.into_iter().map(|((t, p), o)| ((self.topics[t].clone(), p), o)).collect();
                let mut shipped = lock(&self.shipped);
                for (tp, last) in &offsets {
                    let next = shipped.entry(tp.clone()).or_insert(last + 1);
                    *next = (*next).max(last + 1);
                }
                let mut chunk = open.chunk;
                chunk.id = self.tracker.open_chunk(offsets);
                *unsent = Some(chunk);
            }
        }
        self.send_unsent()
    }

    fn send_unsent(&self) -> bool {
        let mut unsent = lock(&self.unsent);
        let Some(chunk) = unsent.take() else { return true };
        let work_tx = lock(&self.work_tx);
        let Some(tx) = work_tx.as_ref() else { return true };
        match tx.try_send(Work::Chunk(chunk)) {
            Ok(()) => true,
            Err(TrySendError::Full(Work::Chunk(chunk))) => {
                *unsent = Some(chunk);
                false
            }
            Err(_) => true, // the decoder is gone; its error is reported by stop()
        }
    }

    /// Sends a work item, waiting at most until `deadline`.
    fn send_until(&self, mut work: Work, deadline: Instant) -> bool {
        let work_tx = lock(&self.work_tx);
        let Some(tx) = work_tx.as_ref() else { return false };
        loop {
            match tx.try_send(work) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    work = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
    }

    /// The barrier for everything shipped so far, handing over `revoked`.
    fn next_barrier(&self, revoked: &[TopicPartition], lost: bool) -> Barrier {
        let offsets = lock(&self.shipped).iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
        Barrier { epoch: self.barriers.load(Ordering::SeqCst) + 1, offsets, motors: Vec::new(), revoked: revoked.to_vec(), lost }
    }

    /// Whether checkpoint barriers are on.
    fn checkpointing(&self) -> bool {
        !self.config.checkpoint_interval.is_zero()
    }

    /// Sends a barrier after everything consumed so far, without waiting: returns false if
    /// the decoder's queue is full (try again later).
    fn try_barrier(&self) -> bool {
        if !self.ship(true) {
            return false;
        }
        let work_tx = lock(&self.work_tx);
        let Some(tx) = work_tx.as_ref() else { return true };
        match tx.try_send(Work::Barrier(self.next_barrier(&[], false))) {
            Ok(()) => {
                self.barriers.fetch_add(1, Ordering::SeqCst);
                self.metrics.barriers.fetch_add(1, Relaxed);
                true
            }
            Err(TrySendError::Full(_)) => false,
            Err(_) => true,
        }
    }

    /// Hands everything consumed so far to the decoder, has it flush its shards (with a
    /// barrier when checkpointing, so that downstream checkpoints, hands over `revoked` and
    /// acknowledges), waits for downstream to acknowledge, and commits synchronously. Used on
    /// revoke and on stop.
    fn hand_over_and_commit(&self, consumer: &BaseConsumer<IngestContext>, revoked: &[TopicPartition]) {
        let deadline = Instant::now() + self.config.drain_timeout;
        let lost = consumer.assignment_lost();
        if self.ship_everything(deadline) {
            if self.checkpointing() {
                if self.send_until(Work::Barrier(self.next_barrier(revoked, lost)), deadline) {
                    self.barriers.fetch_add(1, Ordering::SeqCst);
                    self.metrics.barriers.fetch_add(1, Relaxed);
                }
            } else {
                self.send_until(Work::Drain, deadline);
            }
        }
        // Closing (the decoder's queue is gone): nothing handed on from now can be acknowledged,
        // so there is nothing to wait for.
        let closing = lock(&self.work_tx).is_none();
        let left = if closing { Duration::ZERO } else { deadline.saturating_duration_since(Instant::now()) };
        if !self.tracker.wait_idle(left) && !closing {
            tracing::warn!("drain timed out; uncommitted readings will be consumed again (duplicates)");
        }
        if !lost {
            self.commit(consumer);
        }
    }

    /// Newly assigned partitions: their checkpoints' offsets go into `tpl` (consumption starts
    /// there), and the checkpoints go downstream ahead of any of their messages.
    fn start_partitions(&self, tpl: &mut TopicPartitionList, assigned: &[TopicPartition]) {
        let Some(states) = &self.states else { return };
        if assigned.is_empty() {
            return;
        }
        let starts = match states.assigned(assigned) {
            Ok(starts) => starts,
            Err(why) => {
                lock(&self.failure).get_or_insert(why);
                return;
            }
        };
        for start in &starts {
            let Some(at) = start.resume_at else { continue };
            if let Some(topic) = self.topics.iter().position(|t| *t == start.topic) {
                lock(&self.next_offset).insert((topic, start.partition), at);
            }
            match tpl.set_partition_offset(&start.topic, start.partition, Offset::Offset(at)) {
                Ok(()) => {
                    self.metrics.resumed_at_checkpoint.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    lock(&self.failure).get_or_insert(format!("{}/{}: setting the checkpoint's offset {at}: {e}", start.topic, start.partition));
                }
            }
        }
        // Ahead of the open chunk (whose messages are of other partitions), so that downstream
        // has the state before the partitions' first readings.
        let deadline = Instant::now() + self.config.drain_timeout;
        if !self.send_until(Work::Assigned(starts), deadline) {
            lock(&self.failure).get_or_insert("the decoder took no assignment within drain_timeout".into());
        }
    }

    /// Hands every message consumed so far to the decoder: the sealed chunk waiting for room,
    /// then the open one. False if the decoder had no room before `deadline`.
    fn ship_everything(&self, deadline: Instant) -> bool {
        loop {
            if self.ship(true) && lock(&self.open).chunk.messages.is_empty() && lock(&self.unsent).is_none() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Commits what is committable, synchronously (a round trip per `commit_interval`), so
    /// that a failure is known at once and the offsets are offered again. Returns false if
    /// the commit failed.
    fn commit(&self, consumer: &BaseConsumer<IngestContext>) -> bool {
        let offsets = self.tracker.take_committable();
        if offsets.is_empty() {
            return true;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &offsets {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::warn!(error = %e, "bad offset to commit");
            }
        }
        self.metrics.commits.fetch_add(1, Relaxed);
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                fail::fail_point!("ingest-after-commit");
                true
            }
            Err(e) => {
                self.metrics.commit_errors.fetch_add(1, Relaxed);
                self.tracker.commit_failed(&offsets);
                tracing::warn!(error = %e, "offset commit failed; it will be retried");
                false
            }
        }
    }

    /// Checks a message's offset against its partition's next one: offsets skipped are counted
    /// and reported; a message at or before one already handed on (delivered again, while its
    /// partition stayed assigned) is counted and must be dropped: false. Each reading then
    /// reaches the state once, whatever the client library or broker re-sends.
    fn in_order(&self, topic: usize, topic_name: &str, partition: i32, offset: i64) -> bool {
        match next_in_partition(&mut lock(&self.next_offset), (topic, partition), offset) {
            Sequence::Again { next } => {
                self.metrics.redelivered_dropped.fetch_add(1, Relaxed);
                tracing::warn!(topic = topic_name, partition, offset, next, "a message delivered again was dropped (it is already handed on)");
                false
            }
            Sequence::After { skipped_from } => {
                self.metrics.offsets_skipped.fetch_add((offset - skipped_from) as u64, Relaxed);
                tracing::warn!(
                    topic = topic_name,
                    partition,
                    from = skipped_from,
                    to = offset - 1,
                    "offsets skipped: the log no longer had them (retention deleted them before they were read), or they were \
                     transaction markers, aborted or compacted records"
                );
                true
            }
            Sequence::Next => true,
        }
    }

    fn set_paused(&self, consumer: &BaseConsumer<IngestContext>, paused: bool) {
        if self.paused.swap(paused, Ordering::SeqCst) == paused {
            return;
        }
        let Ok(assignment) = consumer.assignment() else { return };
        let result = if paused {
            self.metrics.pauses.fetch_add(1, Relaxed);
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, paused, "pause/resume failed");
        }
    }
}

/// Where a message's offset falls against its partition's next offset.
#[derive(Debug, PartialEq, Eq)]
enum Sequence {
    /// The next one (or the partition's first since it was assigned without a checkpoint).
    Next,
    /// Past offsets never delivered, from `skipped_from` on.
    After { skipped_from: i64 },
    /// At or before one already delivered (the partition's next offset is `next`).
    Again { next: i64 },
}

/// Checks `offset` against `partition`'s entry in `next` and, unless it came again, moves the
/// entry past it.
fn next_in_partition(next: &mut HashMap<(usize, i32), i64>, partition: (usize, i32), offset: i64) -> Sequence {
    let sequence = match next.get(&partition).copied() {
        Some(due) if offset < due => return Sequence::Again { next: due },
        Some(due) if offset > due => Sequence::After { skipped_from: due },
        _ => Sequence::Next,
    };
    next.insert(partition, offset + 1);
    sequence
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

struct IngestContext {
    shared: Arc<Shared>,
}

impl ClientContext for IngestContext {
    /// librdkafka's periodic statistics: the lag of the partitions this consumer owns (messages
    /// behind each one's high watermark), summed.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.shared.metrics.consumer_lag.store(lag as u64, Relaxed);
    }
}

impl ConsumerContext for IngestContext {
    /// librdkafka's rebalance, with the ingest's steps around it: a revoke hands everything
    /// over (checkpoint, commit) first; an assignment first sets each partition's start to its
    /// checkpoint's offset and sends the checkpoints downstream.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let s = &self.shared;
        s.metrics.rebalances.fetch_add(1, Relaxed);
        let started = Instant::now();
        let indexed: Vec<(usize, i32)> =
            partitions_of(tpl).into_iter().map(|(topic, partition)| (s.topics.iter().position(|x| *x == topic).unwrap_or(0), partition)).collect();
        {
            let mut last = lock(&s.last_message);
            indexed.iter().for_each(|tp| {
                last.remove(tp);
            });
        }
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = partitions_of(tpl);
                tracing::info!(partitions = ?assigned, "partitions assigned");
                s.tracker.assign(&assigned);
                // A partition this consumer already has keeps its position and its state: its
                // checkpoint is older than both.
                let already: Vec<bool> = {
                    let mut owned = lock(&s.assigned);
                    indexed.iter().map(|tp| !owned.insert(*tp)).collect()
                };
                if already.iter().any(|a| *a) {
                    tracing::warn!(partitions = ?assigned, "assigned partitions this consumer already has; they keep their position and state");
                }
                let new: Vec<TopicPartition> = assigned.iter().zip(&already).filter(|(_, a)| !**a).map(|(tp, _)| tp.clone()).collect();
                {
                    let mut next = lock(&s.next_offset);
                    indexed.iter().zip(&already).filter(|(_, a)| !**a).for_each(|(tp, _)| {
                        next.remove(tp);
                    });
                }
                s.start_partitions(tpl, &new);
                let assigned = match cooperative {
                    // librdkafka refuses an incremental assignment naming a partition it has
                    // (and then assigns none of it): only the new ones.
                    true if already.iter().any(|a| *a) => {
                        let mut fresh = TopicPartitionList::new();
                        for (e, _) in tpl.elements().iter().zip(&already).filter(|(_, a)| !**a) {
                            if let Err(e) = fresh.add_partition_offset(e.topic(), e.partition(), e.offset()) {
                                tracing::warn!(error = %e, "bad start offset");
                            }
                        }
                        consumer.incremental_assign(&fresh)
                    }
                    true => consumer.incremental_assign(tpl),
                    false => consumer.assign(tpl),
                };
                // Newly assigned partitions start unpaused; pause them too while the decoder is full.
                if s.paused.load(Ordering::SeqCst)
                    && let Err(e) = consumer.pause(tpl)
                {
                    tracing::warn!(error = %e, "pausing newly assigned partitions");
                }
                assigned
            }
            other => {
                let revoked = partitions_of(tpl);
                if other == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::info!(partitions = ?revoked, "partitions revoked: handing over and committing");
                } else {
                    tracing::warn!(error = ?other, "rebalance error: giving up the assignment");
                }
                s.hand_over_and_commit(consumer, &revoked);
                let (mut assigned, mut next) = (lock(&s.assigned), lock(&s.next_offset));
                indexed.iter().for_each(|tp| {
                    assigned.remove(tp);
                    next.remove(tp);
                });
                drop((assigned, next));
                s.tracker.revoke(&revoked);
                let mut shipped = lock(&s.shipped);
                revoked.iter().for_each(|tp| {
                    shipped.remove(tp);
                });
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying the rebalance");
        }
        s.metrics.longest_rebalance_us.fetch_max(started.elapsed().as_micros() as u64, Relaxed);
    }
}

/// The process's resident memory in bytes (`VmRSS` of `/proc/self/status`); `None` where
/// that is not readable.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// The memory budget: checked every 50 ms; at 90 % of it the consumer pauses (what is in flight
/// still lands, hence the margin) until the process is back under 80 % of it, or until nothing
/// is in flight any more: then the memory is state, not input, and pausing cannot free it (it
/// would stall the node for good), so consumption goes on and a warning says so. That level is
/// remembered as the state's floor: the consumer pauses again only when input in flight adds
/// another 5 % of the budget on top of it (or once memory fell under 80 %), never every check,
/// which would pause and resume the partitions (dropping librdkafka's prefetched messages each
/// time) faster than anything is consumed.
struct MemoryBudget {
    limit: Option<u64>,
    over: bool,
    /// Memory found to be state (over the threshold with nothing in flight).
    state_floor: Option<u64>,
    checked: Instant,
}

impl MemoryBudget {
    fn new(mb: u64) -> Self {
        Self { limit: (mb > 0).then_some(mb << 20), over: false, state_floor: None, checked: Instant::now() }
    }

    /// Whether to pause now; `idle`: nothing consumed is still in flight.
    fn over(&mut self, metrics: &IngestMetrics, idle: impl FnOnce() -> bool) -> bool {
        if self.limit.is_none() || self.checked.elapsed() < Duration::from_millis(50) {
            return self.over;
        }
        self.checked = Instant::now();
        let Some(rss) = resident_bytes() else { return false };
        metrics.peak_rss_bytes.fetch_max(rss, Relaxed);
        self.step(rss, idle, metrics)
    }

    fn step(&mut self, rss: u64, idle: impl FnOnce() -> bool, metrics: &IngestMetrics) -> bool {
        let Some(limit) = self.limit else { return false };
        let was_over = self.over;
        if rss <= limit / 10 * 8 {
            self.state_floor = None;
        }
        let pause_at = (limit / 10 * 9).max(self.state_floor.map_or(0, |floor| floor + limit / 20));
        self.over = if was_over { rss > limit / 10 * 8 } else { rss > pause_at };
        if self.over && !was_over {
            metrics.memory_pauses.fetch_add(1, Relaxed);
            tracing::warn!(rss_mb = rss >> 20, budget_mb = limit >> 20, "near the memory budget: pausing consumption");
        } else if self.over && idle() {
            tracing::warn!(rss_mb = rss >> 20, budget_mb = limit >> 20, "over the memory budget with nothing in flight: the state fills it; consuming on");
            self.state_floor = Some(rss);
            self.over = false;
        }
        self.over
    }
}

fn run_consumer(consumer: BaseConsumer<IngestContext>, s: &Shared, stop: &AtomicBool) -> Result<()> {
    let mut memory = MemoryBudget::new(s.config.memory_budget_mb);
    let mut last_commit = Instant::now();
    let mut last_barrier = Instant::now();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let Some(why) = lock(&s.failure).take() {
            break Err(IngestError::Partitions(why));
        }
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(m)) if !lock(&s.assigned).contains(&(s.topics.iter().position(|t| t == m.topic()).unwrap_or(0), m.partition())) => {
                s.metrics.stale_dropped.fetch_add(1, Relaxed);
            }
            Some(Ok(m)) => {
                s.metrics.messages.fetch_add(1, Relaxed);
                s.metrics.bytes.fetch_add(m.payload_len() as u64, Relaxed);
                let topic = s.topics.iter().position(|t| t == m.topic()).unwrap_or(0);
                let now = Instant::now();
                if let Some(before) = lock(&s.last_message).insert((topic, m.partition()), now) {
                    s.metrics.longest_stall_us.fetch_max((now - before).as_micros() as u64, Relaxed);
                }
                if s.in_order(topic, m.topic(), m.partition(), m.offset()) {
                    lock(&s.open).push(&m, topic);
                }
            }
            Some(Err(e)) => {
                s.metrics.consumer_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "consumer error");
            }
            None => {}
        }
        let shipped = s.ship(false);
        let over_budget = memory.over(&s.metrics, || s.tracker.wait_idle(Duration::ZERO));
        s.set_paused(&consumer, !shipped || over_budget);
        if s.checkpointing() && last_barrier.elapsed() >= s.config.checkpoint_interval && s.try_barrier() {
            last_barrier = Instant::now();
        }
        if last_commit.elapsed() >= s.config.commit_interval {
            last_commit = Instant::now();
            if let Some(why) = s.tracker.failure() {
                break Err(IngestError::DeadLetter { topic: s.config.dead_letter_topic.clone(), reason: why });
            }
            s.commit(&consumer);
        }
    };
    if result.is_ok() {
        s.hand_over_and_commit(&consumer, &[]);
        final_commit(&consumer, s);
    }
    // Closing the consumer may call the revoke callback again: with the decoder's queue gone
    // it only commits what is already committable.
    lock(&s.work_tx).take();
    drop(consumer);
    result
}

/// On stop, a commit refused because the group is rebalancing (another node joining or
/// leaving) is retried until the rebalance settles or `drain_timeout` passes. Polling serves
/// the rebalance; messages it returns are dropped unprocessed, which is safe: their offsets
/// are past everything committed, so they will be consumed again.
fn final_commit(consumer: &BaseConsumer<IngestContext>, s: &Shared) {
    let deadline = Instant::now() + s.config.drain_timeout;
    while !s.commit(consumer) && Instant::now() < deadline {
        let poll_until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < poll_until {
            let _ = consumer.poll(Duration::from_millis(50));
        }
    }
}

struct Decoder {
    config: IngestConfig,
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
    give_up_at: std::cell::Cell<Option<Instant>>,
    /// With barriers: the partition each motor's readings last came from (topic index,
    /// partition), and the motors new there since the last barrier.
    motor_partitions: HashMap<String, (usize, i32)>,
    /// Readings taken per motor, to refuse repeats (with checkpoints, where revocations are
    /// known; see [`crate::repeats`]).
    repeats: crate::repeats::RepeatGuard,
    new_motors: Vec<(String, (usize, i32))>,
}

impl Decoder {
    fn run(mut self, work: Receiver<Work>) -> Result<()> {
        let tick = (self.config.batch_max_age / 4).max(Duration::from_millis(1));
        let result = loop {
            let step = match work.recv_timeout(tick) {
                Ok(Work::Chunk(chunk)) => self.process(&chunk),
                Ok(Work::Drain) => self.emit_all(),
                Ok(Work::Barrier(barrier)) => self.emit_all().and_then(|()| self.emit_barrier(barrier)),
                // Behind everything decoded so far (a partition revoked and assigned back must
                // not have its old readings land after its checkpoint is restored).
                Ok(Work::Assigned(starts)) => self.emit_all().and_then(|()| self.send_control(Control::Assigned(starts))),
                Err(RecvTimeoutError::Timeout) => Ok(()),
                Err(RecvTimeoutError::Disconnected) => break self.emit_all(),
            };
            if let Err(e) = step.and_then(|()| self.emit_aged()) {
                break Err(e);
            }
        };
        if let Err(e) = &result {
            self.tracker.fail(e.to_string());
        }
        self.dead_letters.flush(self.config.drain_timeout);
        result
    }

    fn process(&mut self, chunk: &Chunk) -> Result<()> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
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
            let decoded = decoded.map(|d| self.drop_repeats(d));
            let (readings, reason_code, detail, indices) = match decoded {
                Ok(d) if d.rejected.is_empty() => (d.readings, None, String::new(), None),
                Ok(d) => {
                    d.rejected.iter().for_each(|(_, r)| self.metrics.reject(r));
                    let detail =
                        d.rejected.iter().map(|(i, r)| format!("reading {i}: {r}")).collect::<Vec<_>>().join("\n");
                    let indices = d.rejected.iter().map(|(i, _)| i.to_string()).collect::<Vec<_>>().join(",");
                    (d.readings, Some(d.rejected[0].1.code()), detail, Some(indices))
                }
                Err(reason) => {
                    self.metrics.reject(&reason);
                    (Vec::new(), Some(reason.code()), reason.to_string(), None)
                }
            };
            self.metrics.readings_accepted.fetch_add(readings.len() as u64, Relaxed);
            if self.tracks_motors() {
                for reading in &readings {
                    let id = reading.motor_id.as_str();
                    let here = (m.topic, m.partition);
                    if self.motor_partitions.get(id) != Some(&here) {
                        self.motor_partitions.insert(id.to_string(), here);
                        self.new_motors.push((id.to_string(), here));
                    }
                }
            }
            for reading in &readings {
                let pushed = self.batcher.push(reading, chunk.id, now);
                if let Some(tag) = pushed.new_tag {
                    self.tracker.hold(tag);
                }
                if let Some(flushed) = pushed.flushed {
                    self.emit(flushed)?;
                }
            }
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
        Ok(())
    }

    /// Moves readings already taken (same motor, sequence number and event time) from
    /// `decoded`'s readings to its rejected ones, under their index in the message. Only with
    /// checkpoints: there the decoder learns of revocations, so a partition read again after
    /// one is not taken for a repeat.
    fn drop_repeats(&mut self, decoded: DecodedMessage) -> DecodedMessage {
        if !self.tracks_motors() {
            return decoded;
        }
        let total = decoded.readings.len() + decoded.rejected.len();
        let rejected_at: std::collections::HashSet<usize> = decoded.rejected.iter().map(|(i, _)| *i).collect();
        let mut original = (0..total).filter(|i| !rejected_at.contains(i));
        let mut out = DecodedMessage { readings: Vec::with_capacity(decoded.readings.len()), rejected: decoded.rejected };
        for reading in decoded.readings {
            let index = original.next().unwrap_or(total);
            match self.repeats.check(&reading) {
                Ok(()) => out.readings.push(reading),
                Err(reason) => out.rejected.push((index, reason)),
            }
        }
        out.rejected.sort_by_key(|(i, _)| *i);
        out
    }

    /// Whether barriers go downstream, and with them the partition of each motor.
    fn tracks_motors(&self) -> bool {
        !self.config.checkpoint_interval.is_zero()
    }

    /// Sends a barrier as an empty batch after everything flushed so far, with the motors new
    /// to a partition since the last one; then forgets the revoked partitions' motors (should
    /// one come back, it is reported again).
    fn emit_barrier(&mut self, mut barrier: Barrier) -> Result<()> {
        barrier.motors = std::mem::take(&mut self.new_motors).into_iter().map(|(m, (t, p))| (m, (self.topics[t].clone(), p))).collect();
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
        self.send(ShardBatch { shard: 0, batch: empty, ack: BatchAck { chunks: Vec::new(), tracker: self.tracker.clone(), done: false }, control: Some(control), span: tracing::Span::none() })
    }

    fn emit(&self, flushed: FlushedBatch) -> Result<()> {
        let ack = BatchAck { chunks: flushed.tags, tracker: self.tracker.clone(), done: false };
        let span = tracing::info_span!("ingest.batch", shard = flushed.shard, rows = flushed.batch.num_rows());
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
                        let give_up_at = self.give_up_at.get().unwrap_or_else(|| Instant::now() + self.config.drain_timeout);
                        self.give_up_at.set(Some(give_up_at));
                        if Instant::now() >= give_up_at {
                            // Downstream stopped reading: leave the batch unacknowledged, so
                            // its offsets stay uncommitted and it is consumed again later.
                            tracing::warn!(rows, "stopping: downstream took no batch for drain_timeout; leaving it uncommitted");
                            batch.ack.done = true;
                            return Ok(());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(back)) => {
                    // Nobody will acknowledge it: forget the batch quietly, the error says why.
                    let mut lost = back.ack;
                    lost.done = true;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{Sequence, next_in_partition};

    #[test]
    fn offsets_are_checked_per_partition_and_a_message_delivered_again_does_not_move_the_partition() {
        let mut next = HashMap::new();
        let (a, b) = ((0, 0), (0, 1));
        assert_eq!(next_in_partition(&mut next, a, 40), Sequence::Next, "first since assigned");
        assert_eq!(next_in_partition(&mut next, a, 41), Sequence::Next);
        assert_eq!(next_in_partition(&mut next, b, 7), Sequence::Next, "another partition");
        assert_eq!(next_in_partition(&mut next, a, 45), Sequence::After { skipped_from: 42 });
        assert_eq!(next_in_partition(&mut next, a, 45), Sequence::Again { next: 46 });
        assert_eq!(next_in_partition(&mut next, a, 43), Sequence::Again { next: 46 }, "an older one");
        assert_eq!(next_in_partition(&mut next, a, 46), Sequence::Next, "the next after a re-delivery");
        next.insert(b, 100); // a checkpoint's offset
        assert_eq!(next_in_partition(&mut next, b, 120), Sequence::After { skipped_from: 100 });
    }

    use super::*;

    /// The budget pauses at 90 %, resumes under 80 %, and never pauses for good: over it with
    /// nothing in flight, consumption goes on.
    #[test]
    fn the_memory_budget_pauses_with_hysteresis_and_never_for_good() {
        let metrics = IngestMetrics::default();
        let mut budget = MemoryBudget::new(100);
        let mb = |n: u64| n << 20;
        let busy = || false;
        assert!(!budget.step(mb(89), busy, &metrics));
        assert!(budget.step(mb(91), busy, &metrics), "pauses at 90 %");
        assert!(budget.step(mb(85), busy, &metrics), "stays paused above 80 %");
        assert!(!budget.step(mb(79), busy, &metrics), "resumes under 80 %");
        assert!(budget.step(mb(95), busy, &metrics));
        assert!(!budget.step(mb(95), || true, &metrics), "nothing in flight: pausing cannot help");
        assert!(!budget.step(mb(96), busy, &metrics), "the state's floor is not paused for again");
        assert!(budget.step(mb(101), busy, &metrics), "5 % of input on top of the state is");
        assert!(!budget.step(mb(99), || true, &metrics), "a new floor");
        assert!(!budget.step(mb(70), busy, &metrics), "under 80 %: the floor is forgotten");
        assert!(budget.step(mb(91), busy, &metrics), "and 90 % pauses again");
        assert_eq!(metrics.memory_pauses.load(Relaxed), 4);
        assert!(!MemoryBudget::new(0).step(mb(10_000), busy, &metrics), "no budget, no pause");
    }
}
