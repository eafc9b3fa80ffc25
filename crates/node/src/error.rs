//! What can stop a node, or one of its parts, as data: [`NodeError`].
//!
//! Each variant says which part failed and keeps the cause as its `source`, so the command
//! line can print the whole chain (through anyhow), a log line can ([`tessera_core::error_chain`]),
//! and a test can match on the variant instead of on a message. Config problems stay [`ConfigError`]s (the field's path as data).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tessera_core::ConfigError;

/// A node's, or one of its parts', failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A config field is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configured address could not be listened on.
    #[error("{field} {addr}: cannot bind")]
    Bind {
        /// The config field that names the address, e.g. `sql.listen`.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be read or written.
    #[error("{what} {}", path.display())]
    File {
        /// What the file is for, e.g. `state.dir`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An operating-system resource (a thread, a runtime, a socket) failed.
    #[error("{what}")]
    Io {
        /// What was being done, e.g. `starting the detect thread`.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Kafka client failed.
    #[error("{what}")]
    Kafka {
        /// What was being done, e.g. `writing to motor-alerts`.
        what: String,
        /// Why.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A Kafka topic could not be created.
    #[error("creating topic {topic}: {code}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: rdkafka::types::RDKafkaErrorCode,
    },
    /// Kafka did not take a message for longer than the node waits.
    #[error("writing to {topic}: the producer queue stayed full for {waited:?}")]
    QueueFull {
        /// The topic.
        topic: String,
        /// How long the node waited.
        waited: Duration,
    },
    /// A continuous query could not be planned, registered or dropped.
    #[error("query {name}")]
    Query {
        /// The query's name (or the config field that lists it).
        name: String,
        /// Why.
        #[source]
        source: tessera_stream::StreamError,
    },
    /// A statement registered as query `name` creates another query.
    #[error("query {name}: the statement creates '{created}'; register it under that name")]
    QueryName {
        /// The name it was registered under.
        name: String,
        /// The name the statement creates.
        created: String,
    },
    /// The detection engine failed on data (a step, a checkpoint's encoding or adoption).
    #[error("{what}")]
    Engine {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: tessera_stream::StreamError,
    },
    /// Arrow failed to build or encode a batch.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A JSON encoding failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The ingest failed.
    #[error(transparent)]
    Ingest(#[from] tessera_ingest::IngestError),
    /// The site store failed.
    #[error("{what}")]
    Store {
        /// What was being done, e.g. `writing a telemetry segment`.
        what: String,
        /// Why.
        #[source]
        source: tessera_store::StoreError,
    },
    /// A key-encryption key file would be overwritten.
    #[error("{} exists; a KEK is never overwritten (rotate to a new file instead)", .0.display())]
    KekExists(PathBuf),
    /// A checkpoint could not be read or written.
    #[error("{what}")]
    Checkpoint {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: tessera_state::StateError,
    },
    /// A checkpoint is missing what the node needs to adopt it.
    #[error("{0}")]
    BadCheckpoint(String),
    /// An alert or late reading was not delivered, so no checkpoint may cover it.
    #[error("checkpoint: an alert or late reading was not delivered ({0}); stopping without committing past it")]
    Undelivered(String),
    /// The Raft member failed.
    #[error(transparent)]
    Consensus(#[from] tessera_consensus::ConsensusError),
    /// TLS material or a TLS endpoint failed.
    #[error(transparent)]
    Tls(#[from] tessera_tls::TlsError),
    /// The SQL layer failed (building the endpoint's tables or session).
    #[error(transparent)]
    Sql(#[from] tessera_sql::SqlError),
    /// A gRPC server stopped with an error.
    #[error("the {what} failed")]
    Serve {
        /// Which, e.g. `SQL endpoint`.
        what: &'static str,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A control-plane node could not be reached.
    #[error("cannot reach the {what} at {at}")]
    Unreachable {
        /// What was called, e.g. `node`.
        what: &'static str,
        /// Its address.
        at: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A control-plane node refused a call.
    #[error("node at {at}: {}", .status.message())]
    Refused {
        /// Its address.
        at: String,
        /// Its answer.
        status: Box<tonic::Status>,
    },
    /// A control-plane node did not answer in time.
    #[error("no answer from {at} in {timeout:?}")]
    NoAnswer {
        /// Its address.
        at: String,
        /// How long the node waited.
        timeout: Duration,
    },
    /// The control plane sent something the node cannot use.
    #[error("{0}")]
    BadAnswer(String),
    /// A node spec is not `ID=SITE@HOST:PORT`.
    #[error("node {0:?}: expected ID=SITE@HOST:PORT, e.g. 1=site-a@10.0.0.5:7070")]
    NodeSpec(String),
    /// Tracing or the OTLP exporter could not be set up.
    #[error("{what}")]
    Telemetry {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A part the node needs has stopped (its own error, if any, is reported where it ended).
    #[error("the {0} has stopped")]
    Stopped(&'static str),
    /// A part of the node failed (its error as the source).
    #[error("the {part} failed")]
    Failed {
        /// The part, e.g. `SQL endpoint`.
        part: &'static str,
        /// Why.
        #[source]
        source: Box<NodeError>,
    },
    /// A part of the node panicked.
    #[error("the {0} panicked")]
    Panicked(&'static str),
    /// A lock shared between parts was poisoned by a panic.
    #[error("the {0} lock was poisoned")]
    Poisoned(&'static str),
}
