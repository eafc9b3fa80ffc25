//! What can go wrong starting or running a control-plane node.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A control-plane node's errors.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// A setting is out of range; `field` names it as it is spelled in the config file.
    #[error("config: {field}: {problem}")]
    Config {
        /// The setting, e.g. `raft.election_timeout_min_ms`.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
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
    /// openraft stopped (a storage failure, or shutdown).
    #[error("raft: {0}")]
    Raft(String),
}
