//! What can go wrong starting or running a control-plane node.

use std::net::SocketAddr;
use std::path::PathBuf;

use tessera_core::ConfigError;

use crate::types::TypeConfig;

/// A control-plane node's errors.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// A setting is out of range; the error names the field as it is spelled in the config
    /// file (e.g. `raft.election_timeout_min_ms`).
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The node's TLS material cannot make the endpoint's server configuration.
    #[error("{0}")]
    Tls(#[source] tessera_tls::TlsError),
    /// The log or state file could not be opened or written.
    #[error("raft storage {path}: {source}")]
    Storage {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC endpoint could not be bound.
    #[error("raft endpoint: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// openraft could not start, or stopped (a storage failure, or shutdown).
    #[error("raft: {0}")]
    Raft(#[source] openraft::errors::Fatal<TypeConfig>),
    /// openraft's tasks could not be joined at shutdown.
    #[error("raft: {0}")]
    Shutdown(#[source] tokio::task::JoinError),
    /// Bootstrapping the cluster failed before it was initialised (or while initialising it).
    #[error("raft: bootstrap: {0}")]
    Bootstrap(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Bootstrapping initialised the cluster, but its members' registrations were not
    /// committed within the patience given.
    #[error("raft: bootstrap: recording the members: {0}")]
    RecordingMembers(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The gRPC endpoint failed while serving.
    #[error("raft: gRPC endpoint: {0}")]
    Endpoint(#[source] tonic::transport::Error),
    /// The gRPC endpoint's task panicked or was cancelled.
    #[error("raft: gRPC endpoint task: {0}")]
    EndpointTask(#[source] tokio::task::JoinError),
}

/// Why the alert desk ([`crate::node::AlertDesk`]) did not record an acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// The request is malformed or not this node's to make (another site's alert).
    #[error("{0}")]
    Refused(String),
    /// No quorum answered in time (or no leader is known).
    #[error("{0}")]
    Unavailable(String),
}
