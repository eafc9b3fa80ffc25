//! Counters of what the ingest did, readable while it runs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tessera_core::RejectReason;

/// Live counters, shared with the pipeline's threads.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) readings_accepted: AtomicU64,
    pub(crate) readings_rejected: AtomicU64,
    pub(crate) rejected_by_reason: [AtomicU64; RejectReason::CODES.len()],
    pub(crate) dead_letters_sent: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) rows: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_errors: AtomicU64,
    pub(crate) rebalances: AtomicU64,
    pub(crate) pauses: AtomicU64,
    pub(crate) consumer_errors: AtomicU64,
    pub(crate) barriers: AtomicU64,
    pub(crate) resumed_at_checkpoint: AtomicU64,
    pub(crate) stale_checkpoints: AtomicU64,
    pub(crate) longest_rebalance_us: AtomicU64,
    pub(crate) longest_stall_us: AtomicU64,
    pub(crate) stale_dropped: AtomicU64,
    pub(crate) memory_pauses: AtomicU64,
    pub(crate) peak_rss_bytes: AtomicU64,
    pub(crate) offsets_skipped: AtomicU64,
    pub(crate) redelivered_dropped: AtomicU64,
    pub(crate) consumer_lag: AtomicU64,
    /// The partitions this node answers for.
    pub(crate) ownership: crate::PartitionOwnership,
    /// Subscribed topics the brokers said do not exist, at the last check.
    pub(crate) missing_topics: std::sync::Mutex<Vec<String>>,
    /// The newest event time accepted from each partition (updated once per chunk).
    pub(crate) newest_event_ms: std::sync::Mutex<std::collections::BTreeMap<crate::TopicPartition, i64>>,
}

/// A snapshot of [`IngestMetrics`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Kafka messages consumed.
    pub messages: u64,
    /// Payload bytes consumed.
    pub bytes: u64,
    /// Readings that passed validation and went into batches.
    pub readings_accepted: u64,
    /// Readings (or whole messages) rejected.
    pub readings_rejected: u64,
    /// Rejections per [`RejectReason::code`], only the non-zero ones.
    pub rejected_by_reason: Vec<(&'static str, u64)>,
    /// Messages the broker confirmed on the dead-letter topic.
    pub dead_letters_sent: u64,
    /// Shard batches handed downstream.
    pub batches: u64,
    /// Rows in those batches.
    pub rows: u64,
    /// Offset commits issued.
    pub commits: u64,
    /// Offset commits that failed.
    pub commit_errors: u64,
    /// Rebalance events (assign and revoke).
    pub rebalances: u64,
    /// Times the consumer paused its partitions because downstream was behind.
    pub pauses: u64,
    /// Errors the consumer reported (they are retried by librdkafka).
    pub consumer_errors: u64,
    /// Checkpoint barriers sent downstream.
    pub barriers: u64,
    /// Assigned partitions that started at their checkpoint's offset.
    pub resumed_at_checkpoint: u64,
    /// Assigned partitions whose checkpoint was older than the group's committed offset: not
    /// used (that would rewind past what the group already committed); their motors started
    /// fresh at the committed offset.
    pub stale_checkpoints: u64,
    /// The longest rebalance callback (handing partitions over, or loading assigned ones'
    /// checkpoints), in microseconds: no partition of this consumer is read meanwhile.
    pub longest_rebalance_us: u64,
    /// The longest gap between two consecutive messages of a partition that stayed assigned,
    /// in microseconds: how long a partition that did not move stalled (across rebalances,
    /// backpressure, and any lull in what the producers sent).
    pub longest_stall_us: u64,
    /// Messages of a partition no longer assigned (fetched before it was revoked), dropped
    /// unread: its new owner reads them.
    pub stale_dropped: u64,
    /// Times the process went over `memory_budget_mb` and the consumer paused for it.
    pub memory_pauses: u64,
    /// The highest resident memory seen while a budget is set, in bytes.
    pub peak_rss_bytes: u64,
    /// Offsets of an assigned partition that were never delivered: the log no longer had them
    /// when they were due (retention deleted them before they were read, or the checkpoint's
    /// offset was older than the log's start), or they held transaction markers or aborted or
    /// compacted records. Outside transactions and compaction, each one is a reading lost
    /// upstream of Tessera; a warning names the partition and range.
    pub offsets_skipped: u64,
    /// Messages delivered again at or before an offset already handed on while their
    /// partition stayed assigned (a client or broker re-sending), dropped so that no reading
    /// is counted twice; a warning names the partition and offset.
    pub redelivered_dropped: u64,
    /// Messages behind the high watermarks of the partitions this consumer owns, from
    /// librdkafka's statistics (every 5 s; 0 until the first).
    pub consumer_lag: u64,
}

impl IngestMetrics {
    /// The partitions this node answers for now (see [`crate::PartitionOwnership`]).
    pub fn ownership(&self) -> crate::OwnershipSnapshot {
        self.ownership.snapshot()
    }

    /// The subscribed topics the brokers said do not exist, at the last check: the ingest
    /// checks them every second until they do, and reads them from then on.
    pub fn missing_topics(&self) -> Vec<String> {
        self.missing_topics.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The newest event time (ms) of a reading accepted from each partition this node owns
    /// now: how fresh its input is in event time (a partition handed over drops out).
    pub fn newest_event_times(&self) -> Vec<(crate::TopicPartition, i64)> {
        let owned = self.ownership.snapshot().owned;
        let newest = self.newest_event_ms.lock().unwrap_or_else(|p| p.into_inner());
        newest.iter().filter(|(tp, _)| owned.contains(*tp)).map(|(tp, t)| (tp.clone(), *t)).collect()
    }

    pub(crate) fn reject(&self, reason: &RejectReason) {
        self.readings_rejected.fetch_add(1, Relaxed);
        let i = RejectReason::CODES.iter().position(|c| *c == reason.code()).expect("codes are listed");
        self.rejected_by_reason[i].fetch_add(1, Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> IngestStats {
        IngestStats {
            messages: self.messages.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            readings_accepted: self.readings_accepted.load(Relaxed),
            readings_rejected: self.readings_rejected.load(Relaxed),
            rejected_by_reason: RejectReason::CODES
                .iter()
                .zip(&self.rejected_by_reason)
                .map(|(code, n)| (*code, n.load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            dead_letters_sent: self.dead_letters_sent.load(Relaxed),
            batches: self.batches.load(Relaxed),
            rows: self.rows.load(Relaxed),
            commits: self.commits.load(Relaxed),
            commit_errors: self.commit_errors.load(Relaxed),
            rebalances: self.rebalances.load(Relaxed),
            pauses: self.pauses.load(Relaxed),
            consumer_errors: self.consumer_errors.load(Relaxed),
            barriers: self.barriers.load(Relaxed),
            resumed_at_checkpoint: self.resumed_at_checkpoint.load(Relaxed),
            stale_checkpoints: self.stale_checkpoints.load(Relaxed),
            longest_rebalance_us: self.longest_rebalance_us.load(Relaxed),
            longest_stall_us: self.longest_stall_us.load(Relaxed),
            stale_dropped: self.stale_dropped.load(Relaxed),
            memory_pauses: self.memory_pauses.load(Relaxed),
            peak_rss_bytes: self.peak_rss_bytes.load(Relaxed),
            offsets_skipped: self.offsets_skipped.load(Relaxed),
            redelivered_dropped: self.redelivered_dropped.load(Relaxed),
            consumer_lag: self.consumer_lag.load(Relaxed),
        }
    }
}
