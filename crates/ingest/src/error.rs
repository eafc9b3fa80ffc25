//! The ingest's error type.

use rdkafka::error::KafkaError;
use tessera_core::ConfigError;

/// Result with [`IngestError`].
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// What can stop the ingest.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The configuration is unusable; the error names the field, relative to the ingest
    /// section (`shards`, `topics[0].name`, `validation.max_past_ms`).
    #[error("invalid ingest config: {0}")]
    Config(#[from] ConfigError),
    /// The Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A rejected message could not be written to the dead-letter topic. The ingest stops
    /// rather than commit past a message it could neither process nor park.
    #[error("dead-letter topic {topic}: {reason}")]
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
        /// What went wrong.
        reason: String,
    },
    /// An assigned partition's checkpoint could not be loaded or handed downstream.
    #[error("partition state: {0}")]
    Partitions(String),
    /// The receiver of the batches is gone.
    #[error("the downstream batch receiver was dropped")]
    DownstreamClosed,
    /// An ingest thread panicked or could not be started.
    #[error("ingest thread: {0}")]
    Thread(String),
}
