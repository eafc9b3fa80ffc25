//! The ingest's error types.

use rdkafka::error::KafkaError;
use tessera_core::ConfigError;

/// Result with [`IngestError`].
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// What can stop the ingest.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The configuration is unusable; the error names the field, relative to the ingest
    /// section (`shards`, `topics[0].name`, `validation.max_past`).
    #[error("invalid ingest config: {0}")]
    Config(#[from] ConfigError),
    /// The Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A rejected message could not be written to the dead-letter topic, or the broker did not
    /// confirm it. The ingest stops rather than commit past a message it could neither process
    /// nor park.
    #[error("dead-letter topic {topic}: {source}")]
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
        /// The producer's error.
        source: KafkaError,
    },
    /// An assigned partition's checkpoint could not be loaded or handed downstream.
    #[error("partition state: {0}")]
    Partitions(#[from] PartitionStateError),
    /// The receiver of the batches is gone.
    #[error("the downstream batch receiver was dropped")]
    DownstreamClosed,
    /// An ingest thread could not be started.
    #[error("ingest thread: {0}")]
    ThreadStart(#[source] std::io::Error),
    /// An ingest thread panicked.
    #[error("ingest thread: an ingest thread panicked")]
    ThreadPanicked,
}

/// Why newly assigned partitions could not start from their checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum PartitionStateError {
    /// The node's [`PartitionStates`](crate::PartitionStates) could not load the checkpoints.
    #[error("{0}")]
    Load(String),
    /// A checkpoint's offset could not be set as its partition's start.
    #[error("{topic}/{partition}: setting the checkpoint's offset {offset}: {source}")]
    ResumeOffset {
        /// The partition's topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The checkpoint's offset.
        offset: i64,
        /// The Kafka client's error.
        source: KafkaError,
    },
    /// The decoder took no checkpoints within `drain_timeout`.
    #[error("the decoder took no assignment within drain_timeout")]
    DecoderBusy,
}
