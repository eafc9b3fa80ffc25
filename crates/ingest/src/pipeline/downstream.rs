//! What the ingest hands downstream: [`ShardBatch`]es of readings with their [`BatchAck`],
//! and in between, as empty batches, [`Control`]s: checkpoint [`Barrier`]s and the
//! checkpoints of newly assigned partitions ([`PartitionStart`]), which come from the node's
//! [`PartitionStates`].

use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::offsets::{OffsetTracker, TopicPartition};

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
    /// Set by the ingest when the checkpoint is older than the group's committed offset:
    /// downstream must not restore it (the partition starts fresh at the committed offset;
    /// `resume_at` is then `None`).
    pub stale: bool,
}

impl std::fmt::Debug for PartitionStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionStart")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("resume_at", &self.resume_at)
            .field("state", &self.state.is_some())
            .field("stale", &self.stale)
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
    /// The acknowledgement of a batch with rows from `chunks`.
    pub(super) fn new(chunks: Vec<u64>, tracker: Arc<OffsetTracker>) -> Self {
        Self { chunks, tracker, done: false }
    }

    /// Drops the acknowledgement on purpose, without the warning: the batch's offsets stay
    /// uncommitted and its readings are consumed again later.
    pub fn leave_unacknowledged(mut self) {
        self.done = true;
    }

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
