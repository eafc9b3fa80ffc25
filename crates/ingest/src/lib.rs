//! Kafka ingest: from telemetry messages on Kafka to per-motor-shard Arrow batches.
//!
//! The path of one message, and the module that owns each step:
//!
//! ```text
//! Kafka ─► consumer thread (pipeline) ─ copies messages into chunks ─► decoder thread (pipeline)
//!            pauses partitions when          │ decode (decode): protobuf or JSON, one reading or a batch
//!            the decoder is behind           │ validate (tessera_core::ValidationRules)
//!                                            │ invalid ─► dead-letter topic with reason headers (dead_letter)
//!                                            ▼
//!                                   shard = hash(motor_id) ─► Arrow builder per shard (batch)
//!                                            │ flushed by row count or age
//!                                            ▼
//!                                   ShardBatch on a bounded channel ─► downstream acks it
//!                                            │
//!            offsets of fully acked chunks are committed (offsets) ◄─┘
//! ```
//!
//! Guarantee: at-least-once. An offset is committed only once every reading of every message
//! up to it has been acknowledged downstream or delivered to the dead-letter topic.
//!
//! With `checkpoint_interval` set, the ingest also sends *barriers* downstream: every message
//! consumed before a barrier is in the batches sent before it, and the barrier names the next
//! offset of each partition. Downstream checkpoints its state with those offsets and only then
//! acknowledges, so commits never run ahead of a checkpoint. With [`Ingest::start_with_states`]
//! checkpoints are per partition: a barrier also names the partition of each new motor, and
//! an assigned partition starts at its checkpoint's offset, its checkpoint sent downstream
//! ahead of its readings ([`Control::Assigned`]); a revoked one is checkpointed and handed over.
#![deny(missing_docs)]

mod batch;
mod config;
mod dead_letter;
mod decode;
mod error;
mod metrics;
mod offsets;
mod ownership;
mod pipeline;
pub mod repeats;

pub use batch::{
    FlushedBatch, PushOutcome, ShardBuilder, ShardedBatcher, batch_checksum, readings_from_batch, row_fingerprints,
};
pub use config::{Encoding, IngestConfig, TopicConfig, TopicCreation};
pub use dead_letter::headers as dead_letter_headers;
pub use decode::{DecodedMessage, MessageLimits, Readings, decode_message};
pub use error::{IngestError, PartitionStateError, Result};
pub use metrics::{IngestMetrics, IngestStats};
pub use offsets::TopicPartition;
pub use ownership::{OwnershipSnapshot, PartitionOwnership};
pub use pipeline::{
    Barrier, BatchAck, Control, Ingest, IngestHandle, IngestLoop, PartitionStart, PartitionStates, ShardBatch,
};
