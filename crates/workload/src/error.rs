//! What can stop a workload tool (the demo, the evaluation, a replay), as data:
//! [`WorkloadError`]. The node's own failures stay [`NodeError`]s inside it.

use std::path::PathBuf;

use tessera_core::ConfigError;
use tessera_node::NodeError;

/// A workload tool's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// A node (or one of its parts) failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The ingest failed.
    #[error(transparent)]
    Ingest(#[from] tessera_ingest::IngestError),
    /// An option or config field is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A motor or site id is not valid.
    #[error(transparent)]
    Id(#[from] tessera_core::IdError),
    /// JSON could not be encoded or decoded.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A password could not be hashed, or an SQL call failed.
    #[error(transparent)]
    Sql(#[from] tessera_sql::SqlError),
    /// A CSV file could not be read.
    #[error(transparent)]
    Csv(#[from] csv::Error),
    /// The Kafka client failed.
    #[error("{what}")]
    Kafka {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A file, socket or runtime failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Messages produced were not delivered.
    #[error("{failed} of {sent} messages were not delivered; first error: {first}")]
    Undelivered {
        /// How many failed.
        failed: u64,
        /// How many were sent.
        sent: u64,
        /// The first failure's reason.
        first: String,
    },
    /// A recorded file could not be replayed.
    #[error("replaying {}", path.display())]
    Replay {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<WorkloadError>,
    },
    /// Data read from a file is not what it must be (a row, a timestamp, a label).
    #[error("{0}")]
    BadData(String),
    /// A step of the tool failed (e.g. `starting site site-a`).
    #[error("{what}")]
    Step {
        /// The step.
        what: String,
        /// Why.
        #[source]
        source: Box<WorkloadError>,
    },
    /// Something the tool waits for did not happen (a leader, every reading taken in) or a
    /// part stopped on its own.
    #[error("{0}")]
    Stalled(String),
}

impl WorkloadError {
    /// The same error, as the cause of `what` failing.
    pub fn during(self, what: impl Into<String>) -> Self {
        WorkloadError::Step { what: what.into(), source: Box::new(self) }
    }
}

/// A Kafka failure while `what`.
pub(crate) fn kafka(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> WorkloadError {
    let what = what.into();
    move |source| WorkloadError::Kafka { what, source }
}

/// An I/O failure while `what`.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkloadError {
    let what = what.into();
    move |source| WorkloadError::Io { what, source }
}
