//! The consumer's librdkafka context: the rebalance callback, with the ingest's steps around
//! librdkafka's own (a revoke first hands everything over: barrier, checkpoint, commit; an
//! assignment first sets each new partition's start to its checkpoint's offset and sends the
//! checkpoints downstream), and the statistics callback (the consumer lag). An event served
//! after the group has terminated (the consumer closing) only updates the ingest's own
//! bookkeeping: librdkafka answers no request about a terminated group, and would wait for
//! the answer forever.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset};

use super::chunk::Work;
use super::consumer::{ConsumerState, lock};
use crate::PartitionStateError;
use crate::offsets::TopicPartition;

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

/// The consumer's librdkafka context.
pub(super) struct IngestContext {
    shared: Arc<ConsumerState>,
}

impl IngestContext {
    /// The context of the consumer whose state is `shared`.
    pub(super) fn new(shared: Arc<ConsumerState>) -> Self {
        Self { shared }
    }
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
        for (name, topic) in &statistics.topics {
            let partitions = topic.partitions.keys().filter(|p| **p >= 0).count();
            if partitions > 0 && self.shared.topics.contains(name) {
                self.shared.metrics.ownership.topic_size(name, partitions as i32);
            }
        }
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
        let indexed: Vec<(usize, i32)> = partitions_of(tpl)
            .into_iter()
            .map(|(topic, partition)| (s.topics.iter().position(|x| *x == topic).unwrap_or(0), partition))
            .collect();
        // The stall metric starts over for every partition in the rebalance.
        lock(&s.partitions).iter_mut().filter(|(tp, _)| indexed.contains(tp)).for_each(|(_, cursor)| {
            cursor.last_message = None;
        });
        if consumer.closed() {
            // The group has terminated (the consumer is closing, and this event was queued
            // before): librdkafka answers no more requests about the group, and one (assign,
            // commit, even the rebalance protocol) would wait forever (librdkafka issue #4041).
            // Only the ingest's own bookkeeping is done.
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
                forget_revoked(s, &indexed, &partitions_of(tpl));
            }
            tracing::info!(error = ?err, "a rebalance event after the consumer closed: nothing to apply");
            return;
        }
        let cooperative = s.cooperative;
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = partitions_of(tpl);
                tracing::info!(partitions = ?assigned, "partitions assigned");
                s.tracker.assign(&assigned);
                learn_topic_sizes(s, consumer);
                s.metrics.ownership.assign(&assigned);
                // A partition this consumer already has keeps its position and its state: its
                // checkpoint is older than both. A new one's next offset is not known yet.
                let already: Vec<bool> = {
                    let mut owned = lock(&s.partitions);
                    indexed
                        .iter()
                        .map(|tp| {
                            let had = owned.contains_key(tp);
                            owned.entry(*tp).or_default();
                            had
                        })
                        .collect()
                };
                if already.iter().any(|a| *a) {
                    tracing::warn!(partitions = ?assigned, "assigned partitions this consumer already has; they keep their position and state");
                }
                let new: Vec<TopicPartition> =
                    assigned.iter().zip(&already).filter(|(_, a)| !**a).map(|(tp, _)| tp.clone()).collect();
                start_partitions(s, consumer, tpl, &new);
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
                forget_revoked(s, &indexed, &revoked);
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying the rebalance");
        }
        s.metrics.longest_rebalance_us.fetch_max(started.elapsed().as_micros() as u64, Relaxed);
    }
}

/// Forgets the revoked partitions (`indexed` by topic index, and by name): their cursors,
/// offsets, ownership and shipped offsets.
fn forget_revoked(s: &ConsumerState, indexed: &[(usize, i32)], revoked: &[TopicPartition]) {
    {
        let mut partitions = lock(&s.partitions);
        indexed.iter().for_each(|tp| {
            partitions.remove(tp);
        });
    }
    s.tracker.revoke(revoked);
    s.metrics.ownership.revoke(revoked);
    let mut shipped = lock(&s.shipped);
    revoked.iter().for_each(|tp| {
        shipped.remove(tp);
    });
}

/// Newly assigned partitions: their checkpoints' offsets go into `tpl` (consumption starts
/// there), and the checkpoints go downstream ahead of any of their messages.
fn start_partitions(
    s: &ConsumerState,
    consumer: &BaseConsumer<IngestContext>,
    tpl: &mut TopicPartitionList,
    assigned: &[TopicPartition],
) {
    let Some(states) = &s.states else { return };
    if assigned.is_empty() {
        return;
    }
    let mut starts = match states.assigned(assigned) {
        Ok(starts) => starts,
        Err(why) => {
            lock(&s.failure).get_or_insert(PartitionStateError::Load(why));
            return;
        }
    };
    never_rewind(s, consumer, &mut starts);
    for start in &starts {
        let Some(at) = start.resume_at else { continue };
        if let Some(topic) = s.topics.iter().position(|t| *t == start.topic)
            && let Some(cursor) = lock(&s.partitions).get_mut(&(topic, start.partition))
        {
            cursor.next_offset = Some(at);
        }
        match tpl.set_partition_offset(&start.topic, start.partition, Offset::Offset(at)) {
            Ok(()) => {
                s.metrics.resumed_at_checkpoint.fetch_add(1, Relaxed);
            }
            Err(e) => {
                lock(&s.failure).get_or_insert(PartitionStateError::ResumeOffset {
                    topic: start.topic.clone(),
                    partition: start.partition,
                    offset: at,
                    source: e,
                });
            }
        }
    }
    // Ahead of the open chunk (whose messages are of other partitions), so that downstream
    // has the state before the partitions' first readings.
    let deadline = Instant::now() + s.config.drain_timeout;
    if !s.send_until(Work::Assigned(starts), deadline) {
        lock(&s.failure).get_or_insert(PartitionStateError::DecoderBusy);
    }
}

/// Drops the checkpoints in `starts` that are older than the group's committed offset of their
/// partition (e.g. left on a volume the partition's later owners never wrote): resuming there
/// would read again, and publish again, what the group has already committed. Such a
/// partition starts at its committed offset with fresh state, counted and logged. If the
/// committed offsets cannot be read, the checkpoints are used as they are (with a warning).
fn never_rewind(s: &ConsumerState, consumer: &BaseConsumer<IngestContext>, starts: &mut [super::PartitionStart]) {
    let mut query = TopicPartitionList::new();
    for start in starts.iter().filter(|start| start.resume_at.is_some()) {
        query.add_partition(&start.topic, start.partition);
    }
    if query.count() == 0 {
        return;
    }
    let committed = match consumer.committed_offsets(query, s.config.drain_timeout) {
        Ok(committed) => committed,
        Err(e) => {
            tracing::warn!(error = %e, "reading the committed offsets: checkpoints used without comparing them");
            return;
        }
    };
    for start in starts.iter_mut() {
        let Some(at) = start.resume_at else { continue };
        let Some(Offset::Offset(committed)) =
            committed.find_partition(&start.topic, start.partition).map(|e| e.offset())
        else {
            continue;
        };
        if at < committed {
            tracing::warn!(
                topic = %start.topic,
                partition = start.partition,
                checkpoint = at,
                committed,
                "the partition's checkpoint is older than the group's committed offset: not rewinding; its motors start fresh there"
            );
            s.metrics.stale_checkpoints.fetch_add(1, Relaxed);
            start.resume_at = None;
            start.stale = true;
        }
    }
}

/// Reads the partition count of each input topic whose size the ownership does not know yet
/// (librdkafka's statistics would tell within seconds; a site's queries need it now).
fn learn_topic_sizes(s: &ConsumerState, consumer: &BaseConsumer<IngestContext>) {
    let known = s.metrics.ownership.snapshot().topic_partitions;
    for topic in s.topics.iter().filter(|t| !known.contains_key(*t)) {
        match consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(5)) {
            Ok(metadata) => {
                if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic && !t.partitions().is_empty()) {
                    s.metrics.ownership.topic_size(topic, t.partitions().len() as i32);
                }
            }
            Err(e) => tracing::debug!(%topic, error = %e, "reading the topic's size; the statistics will tell"),
        }
    }
}
