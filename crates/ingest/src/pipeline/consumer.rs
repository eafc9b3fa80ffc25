//! The consumer thread: polls Kafka, copies each message into the open chunk, ships full or
//! lingering chunks to the decoder, stops polling while the decoder's queue is full (pausing
//! its partitions if that lasts [`PAUSE_AFTER`]) and pauses them while memory is near its
//! budget ([`MemoryBudget`]). It sends a barrier every `checkpoint_interval`, has its
//! committer thread commit what the [`OffsetTracker`] allows every `commit_interval`, and,
//! when partitions are revoked (see `rebalance`) or the ingest stops, hands everything on,
//! waits (up to `drain_timeout`) for downstream to acknowledge it and commits synchronously.
//!
//! Offsets are checked per partition on the way in: a message delivered again is dropped,
//! offsets skipped are counted.
//!
//! The thread's own cost per message is kept to the poll, one lock and lookup of the
//! message's partition and the copy; everything else (shipping a lingering chunk, the memory
//! budget, pausing, barriers, commits, failures from the rebalance callbacks) runs as chores
//! at most once per [`CHORES_EVERY`], or at once when the open chunk is full.
//!
//! Subscribed topics that do not exist yet are looked for every second (see `topic_watch`).
//!
//! Periodic commits run on a committer thread beside it: librdkafka holds a commit back while
//! the group rebalances, and a commit on the consumer thread stopped polling, and with it
//! consumption, for the whole rebalance (measured: 41 s on the mock cluster, whose joins wait
//! out the session timeout). Commits on revoke and stop stay on the consumer thread; one lock
//! keeps any two commits from interleaving.
//!
//! A stop ends by closing the consumer (leaving the group) for at most the drain timeout and
//! [`CLOSE_GRACE`]: librdkafka's close can wait forever when a rebalance event is in flight
//! as it begins, and the rebalance callback then asks librdkafka nothing (see `rebalance`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset};

use super::chunk::{Chunk, OpenChunk, Work};
use super::downstream::{Barrier, PartitionStates};
use super::memory_budget::MemoryBudget;
use super::topic_watch::TopicWatch;
use crate::metrics::IngestMetrics;
use crate::offsets::{Halt, OffsetTracker, TopicPartition};
use crate::{IngestConfig, IngestError, PartitionStateError, Result};

/// The consumer's librdkafka settings: Tessera's, then the config's `kafka` ones over them.
pub(super) fn client_config(config: &IngestConfig) -> ClientConfig {
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
    client
}

/// Whether a consumer with these settings rebalances incrementally (cooperatively): its
/// assignment strategy is librdkafka's cooperative one, or the group uses the KIP-848
/// protocol. Read from the settings once: asking librdkafka in a rebalance callback waits
/// forever if the group has terminated meanwhile (librdkafka issue #4041).
pub(super) fn is_cooperative(client: &ClientConfig) -> bool {
    let kip_848 = client.get("group.protocol").is_some_and(|p| p.trim().eq_ignore_ascii_case("consumer"));
    let strategies = client.get("partition.assignment.strategy").unwrap_or("range,roundrobin");
    kip_848 || strategies.split(',').all(|s| s.trim() == "cooperative-sticky")
}

/// How long closing the consumer (leaving the group, its last rebalance callbacks) may take
/// beyond the drain timeout before the stop gives up waiting for it.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// How often the consumer thread does its chores between messages.
const CHORES_EVERY: Duration = Duration::from_millis(1);

/// How long the consumer thread stops polling while the decoder's queue is full before it
/// pauses its partitions. Not polling is the cheap backpressure: librdkafka's bounded prefetch
/// then stops fetching by itself. Pausing purges what librdkafka prefetched and, on resume,
/// fetches it again after a back-off (stalls of ~0.7 s on the mock cluster, measured), so it
/// is kept for a decoder behind for longer, when rebalance callbacks (served by polling) must
/// not wait.
const PAUSE_AFTER: Duration = Duration::from_millis(250);

/// What the consumer thread keeps of an assigned partition.
#[derive(Debug, Default)]
pub(super) struct PartitionCursor {
    /// The offset the partition's next message should have: past its last message, or its
    /// checkpoint's offset before the first. `None`: not known yet (assigned without a
    /// checkpoint, before its first message). A message beyond it means offsets were skipped
    /// (see [`crate::IngestStats::offsets_skipped`]).
    pub(super) next_offset: Option<i64>,
    /// When its last message arrived, for the stall metric (`None` since it was assigned).
    pub(super) last_message: Option<Instant>,
}

/// The assigned partitions by (topic index, partition).
pub(super) type Partitions = HashMap<(usize, i32), PartitionCursor, foldhash::fast::RandomState>;

/// The consumer thread's state, shared with the rebalance callbacks (which run inside `poll`,
/// on the consumer thread).
pub(super) struct ConsumerState {
    pub(super) config: IngestConfig,
    /// The config's topics' names; messages and partitions refer to a topic by its index here.
    pub(super) topics: Vec<String>,
    pub(super) tracker: Arc<OffsetTracker>,
    pub(super) metrics: Arc<IngestMetrics>,
    /// The decoder's queue; taken away when the consumer ends.
    work_tx: Mutex<Option<SyncSender<Work>>>,
    open: Mutex<OpenChunk>,
    /// A sealed chunk the decoder had no room for yet.
    unsent: Mutex<Option<Chunk>>,
    /// Whether the assigned partitions are paused (decoder behind, or memory budget).
    pub(super) paused: AtomicBool,
    /// How long a chunk may wait for more messages before it is shipped.
    chunk_linger: Duration,
    /// Next offset of each partition past the chunks handed to the decoder (barrier offsets).
    pub(super) shipped: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Where assigned partitions' checkpoints come from.
    pub(super) states: Option<Arc<dyn PartitionStates>>,
    /// Why the ingest must stop (set in a rebalance callback, which cannot return an error).
    pub(super) failure: Mutex<Option<PartitionStateError>>,
    /// The partitions assigned now: a message of any other (fetched before its partition was
    /// revoked) is dropped, as the partition's new owner reads it.
    pub(super) partitions: Mutex<Partitions>,
    /// Barriers sent so far (the last epoch).
    barriers: AtomicU64,
    /// Held from taking the committable offsets until the broker answered their commit.
    commit_lock: Mutex<()>,
    /// Whether the group's rebalances are incremental (see [`is_cooperative`]).
    pub(super) cooperative: bool,
}

/// Locks `m`, whether or not a thread panicked holding it.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConsumerState {
    /// The state of a consumer that hands its chunks to the decoder through `work_tx`.
    pub(super) fn new(
        config: IngestConfig,
        tracker: Arc<OffsetTracker>,
        metrics: Arc<IngestMetrics>,
        work_tx: SyncSender<Work>,
        states: Option<Arc<dyn PartitionStates>>,
    ) -> Self {
        let cooperative = is_cooperative(&client_config(&config));
        Self {
            chunk_linger: (config.batch_max_age / 10).clamp(Duration::from_millis(1), Duration::from_millis(50)),
            topics: config.topics.iter().map(|t| t.name.clone()).collect(),
            config,
            tracker,
            metrics,
            work_tx: Mutex::new(Some(work_tx)),
            open: Mutex::new(OpenChunk::default()),
            unsent: Mutex::new(None),
            paused: AtomicBool::new(false),
            shipped: Mutex::new(BTreeMap::new()),
            states,
            failure: Mutex::new(None),
            partitions: Mutex::new(Partitions::default()),
            barriers: AtomicU64::new(0),
            commit_lock: Mutex::new(()),
            cooperative,
        }
    }

    /// The config's index of `m`'s topic (without reading its name when there is one topic).
    fn topic_index(&self, m: &BorrowedMessage<'_>) -> usize {
        if self.topics.len() == 1 {
            return 0;
        }
        let name = m.topic();
        self.topics.iter().position(|t| t == name).unwrap_or(0)
    }

    /// Takes message `m` of the config's topic `topic`, arrived at `now`: dropped if its
    /// partition is not assigned or it came again, else copied into the open chunk. Returns
    /// whether the open chunk is full.
    fn take(&self, m: &BorrowedMessage<'_>, topic: usize, now: Instant) -> bool {
        let (partition, offset) = (m.partition(), m.offset());
        let sequence = {
            let mut partitions = lock(&self.partitions);
            let Some(cursor) = partitions.get_mut(&(topic, partition)) else {
                self.metrics.stale_dropped.fetch_add(1, Relaxed);
                return false;
            };
            if let Some(before) = cursor.last_message.replace(now) {
                self.metrics.longest_stall_us.fetch_max((now - before).as_micros() as u64, Relaxed);
            }
            next_in_partition(&mut cursor.next_offset, offset)
        };
        self.metrics.messages.fetch_add(1, Relaxed);
        self.metrics.bytes.fetch_add(m.payload_len() as u64, Relaxed);
        if !self.in_order(sequence, &self.topics[topic], partition, offset) {
            return false;
        }
        let mut open = lock(&self.open);
        open.push(m, topic, now);
        open.chunk.messages.len() >= self.config.chunk_max_messages
    }

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
                let offsets: Vec<(TopicPartition, i64)> =
                    open.last_offsets.into_iter().map(|((t, p), o)| ((self.topics[t].clone(), p), o)).collect();
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

    /// Waits up to `patience` for the decoder to take the sealed chunk. Returns whether it did.
    fn wait_for_room(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
            if self.send_unsent() {
                return true;
            }
        }
        false
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
    pub(super) fn send_until(&self, mut work: Work, deadline: Instant) -> bool {
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
        Barrier {
            epoch: self.barriers.load(Ordering::SeqCst) + 1,
            offsets,
            motors: Vec::new(),
            revoked: revoked.to_vec(),
            lost,
        }
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
    pub(super) fn hand_over_and_commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        revoked: &[TopicPartition],
    ) {
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

    /// Commits what is committable, synchronously (a round trip per `commit_interval`, on the
    /// committer thread), so that a failure is known at once and the offsets are offered
    /// again. Returns false if the commit failed.
    fn commit<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) -> bool {
        let _one_at_a_time = lock(&self.commit_lock);
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

    /// Acts on where a message's offset fell against its partition's next one: offsets skipped
    /// are counted and reported; a message at or before one already handed on (delivered
    /// again, while its partition stayed assigned) is counted and must be dropped: false. Each
    /// reading then reaches the state once, whatever the client library or broker re-sends.
    fn in_order(&self, sequence: Sequence, topic_name: &str, partition: i32, offset: i64) -> bool {
        match sequence {
            Sequence::Again { next } => {
                self.metrics.redelivered_dropped.fetch_add(1, Relaxed);
                tracing::warn!(
                    topic = topic_name,
                    partition,
                    offset,
                    next,
                    "a message delivered again was dropped (it is already handed on)"
                );
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

    fn set_paused<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, paused: bool) {
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

/// Checks `offset` against a partition's next offset and, unless it came again, moves that
/// past it.
fn next_in_partition(next: &mut Option<i64>, offset: i64) -> Sequence {
    let sequence = match *next {
        Some(due) if offset < due => return Sequence::Again { next: due },
        Some(due) if offset > due => Sequence::After { skipped_from: due },
        _ => Sequence::Next,
    };
    *next = Some(offset + 1);
    sequence
}

/// How the consumer thread's loop ended, short of an error of its own.
enum LoopEnd {
    /// The ingest is stopping: hand everything over and commit.
    Stopped,
    /// The decoder failed (`Ingest::stop` returns its error): nothing more can be handed over
    /// or committed.
    DecoderFailed,
}

/// The consumer thread: polls, chunks and ships messages, pauses and resumes, sends barriers
/// and commits until `stop` (then hands everything over and commits a last time) or an error.
pub(super) fn run<C: ConsumerContext + 'static>(
    consumer: BaseConsumer<C>,
    s: &ConsumerState,
    stop: &AtomicBool,
) -> Result<()>
where
    BaseConsumer<C>: Sync + Send,
{
    // At most one periodic commit waits; the next interval's request is dropped meanwhile.
    let (commit_tx, commit_rx) = sync_channel::<()>(1);
    let ended = std::thread::scope(|scope| {
        let committer = std::thread::Builder::new().name("tessera-commit".into()).spawn_scoped(scope, || {
            for () in commit_rx {
                s.commit(&consumer);
            }
        });
        if let Err(e) = committer {
            return Err(IngestError::ThreadStart(e));
        }
        let ended = consume(&consumer, s, stop, &commit_tx);
        if let Ok(LoopEnd::Stopped) = ended {
            s.hand_over_and_commit(&consumer, &[]);
            final_commit(&consumer, s);
        }
        drop(commit_tx); // the committer thread ends; the scope joins it
        ended
    });
    // Closing the consumer may call the revoke callback again: with the decoder's queue gone
    // it only commits what is already committable.
    lock(&s.work_tx).take();
    close(consumer, s.config.drain_timeout + CLOSE_GRACE);
    ended.map(|_| ())
}

/// Closes the consumer (dropping it leaves the group, serving the last rebalance callbacks)
/// and waits at most `within` for that. librdkafka's close can wait forever (a rebalance
/// event left in flight when it began); the stop must not. Then the closing thread is left
/// behind, with an error logged: the offsets are committed already, and the group gives the
/// partitions to other members once this one's session times out.
fn close<C: ConsumerContext + 'static>(consumer: BaseConsumer<C>, within: Duration) {
    let (closed_tx, closed_rx) = sync_channel::<()>(1);
    let closing = std::thread::Builder::new().name("tessera-close".into()).spawn(move || {
        drop(consumer);
        let _ = closed_tx.send(());
    });
    if let Err(e) = closing {
        tracing::warn!(error = %e, "no thread to close the consumer on; it was not closed");
        return;
    }
    if closed_rx.recv_timeout(within).is_err() {
        tracing::error!(
            within_ms = within.as_millis() as u64,
            "the consumer did not close in time; left closing (the group reassigns its partitions after the session timeout)"
        );
    }
}

/// The consumer thread's loop: polls, chunks and ships messages, pauses and resumes, sends
/// barriers and asks the committer thread to commit, until `stop` or an error.
fn consume<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    s: &ConsumerState,
    stop: &AtomicBool,
    commit: &SyncSender<()>,
) -> Result<LoopEnd> {
    let mut memory = MemoryBudget::new(s.config.memory_budget_mb);
    let mut last_commit = Instant::now();
    let mut last_barrier = Instant::now();
    let mut chores_due = Instant::now();
    let mut topics = TopicWatch::new(&s.topics);
    loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(LoopEnd::Stopped);
        }
        let polled = consumer.poll(Duration::from_millis(20));
        let now = Instant::now();
        let full = match polled {
            Some(Ok(m)) => s.take(&m, s.topic_index(&m), now),
            Some(Err(e)) => {
                s.metrics.consumer_errors.fetch_add(1, Relaxed);
                if let KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition) = e {
                    topics.check_soon();
                }
                tracing::warn!(error = %e, "consumer error");
                false
            }
            None => false,
        };
        if !full && now < chores_due {
            continue;
        }
        chores_due = now + CHORES_EVERY;
        if let Some(why) = lock(&s.failure).take() {
            break Err(IngestError::Partitions(why));
        }
        topics.check_if_due(consumer, &s.metrics, now);
        let shipped = s.ship(false) || s.wait_for_room(PAUSE_AFTER);
        let over_budget = memory.over(&s.metrics, || s.tracker.wait_idle(Duration::ZERO));
        s.set_paused(consumer, !shipped || over_budget);
        if s.checkpointing() && now - last_barrier >= s.config.checkpoint_interval && s.try_barrier() {
            last_barrier = now;
        }
        if now - last_commit >= s.config.commit_interval {
            last_commit = now;
            match s.tracker.failure() {
                Some(Halt::DeadLetter(source)) => {
                    break Err(IngestError::DeadLetter { topic: s.config.dead_letter_topic.clone(), source });
                }
                Some(Halt::DecoderFailed) => break Ok(LoopEnd::DecoderFailed),
                None => {
                    let _ = commit.try_send(()); // full: a commit is still waiting
                }
            }
        }
    }
}

/// On stop, a commit refused because the group is rebalancing (another node joining or
/// leaving) is retried until the rebalance settles or `drain_timeout` passes. Polling serves
/// the rebalance; messages it returns are dropped unprocessed, which is safe: their offsets
/// are past everything committed, so they will be consumed again.
fn final_commit<C: ConsumerContext>(consumer: &BaseConsumer<C>, s: &ConsumerState) {
    let deadline = Instant::now() + s.config.drain_timeout;
    while !s.commit(consumer) && Instant::now() < deadline {
        let poll_until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < poll_until {
            let _ = consumer.poll(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rebalance_protocol_is_read_from_the_settings() {
        let with = |settings: &[(&str, &str)]| {
            let mut client = ClientConfig::new();
            settings.iter().for_each(|(k, v)| {
                client.set(*k, *v);
            });
            is_cooperative(&client)
        };
        let ours = IngestConfig { brokers: "localhost:9092".into(), ..IngestConfig::default() };
        assert!(is_cooperative(&client_config(&ours)), "Tessera's own setting");
        assert!(!with(&[]), "librdkafka's default (range,roundrobin) is eager");
        assert!(!with(&[("partition.assignment.strategy", "range")]));
        assert!(with(&[("partition.assignment.strategy", " cooperative-sticky ")]));
        assert!(with(&[("group.protocol", "consumer"), ("partition.assignment.strategy", "range")]), "KIP-848");
        let overridden = IngestConfig {
            kafka: [("partition.assignment.strategy".to_string(), "roundrobin".to_string())].into(),
            ..ours
        };
        assert!(!is_cooperative(&client_config(&overridden)), "the config's kafka settings win");
    }

    #[test]
    fn offsets_are_checked_per_partition_and_a_message_delivered_again_does_not_move_the_partition() {
        let (mut a, mut b) = (None, None);
        assert_eq!(next_in_partition(&mut a, 40), Sequence::Next, "first since assigned");
        assert_eq!(next_in_partition(&mut a, 41), Sequence::Next);
        assert_eq!(next_in_partition(&mut b, 7), Sequence::Next, "another partition");
        assert_eq!(next_in_partition(&mut a, 45), Sequence::After { skipped_from: 42 });
        assert_eq!(next_in_partition(&mut a, 45), Sequence::Again { next: 46 });
        assert_eq!(next_in_partition(&mut a, 43), Sequence::Again { next: 46 }, "an older one");
        assert_eq!(next_in_partition(&mut a, 46), Sequence::Next, "the next after a re-delivery");
        b = Some(100); // a checkpoint's offset
        assert_eq!(next_in_partition(&mut b, 120), Sequence::After { skipped_from: 100 });
    }
}
