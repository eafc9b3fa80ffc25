//! Why a request to a node's services failed, and the one place that turns it into a gRPC
//! status ([`ServiceError::code`]): a bad request is `INVALID_ARGUMENT`, a refused identity
//! `PERMISSION_DENIED`, no quorum or leader in reach `UNAVAILABLE`, a cluster in the wrong
//! state for the request `FAILED_PRECONDITION`, a local failure `INTERNAL`. The message is
//! the error's text; a status from another node is relayed as it came.

use std::time::Duration;

use openraft::errors::{ClientWriteError, Fatal, InitializeError, LinearizableReadError, RaftError};
use openraft::metrics::WaitError;
use tessera_tls::TlsError;
use tonic::{Code, Status};

use crate::types::{NodeId, RequestError, TypeConfig};

/// Any error, for a request field whose parser has its own error type (or none).
pub(crate) type FieldProblem = Box<dyn std::error::Error + Send + Sync>;

/// Why a Raft or admin request failed. `node` is the node that answers.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// A request field is missing or malformed.
    #[error("{field}: {problem}")]
    InvalidField {
        field: &'static str,
        #[source]
        problem: FieldProblem,
    },
    /// The request would not fit the registry's bounds.
    #[error("{0}")]
    Request(#[from] RequestError),
    /// A Raft message's JSON did not decode.
    #[error("undecodable Raft message: {0}")]
    UndecodableMessage(#[source] serde_json::Error),
    /// A snapshot stream whose first chunk has no header.
    #[error("snapshot stream without a header")]
    SnapshotWithoutHeader,
    /// A snapshot stream larger than this node takes.
    #[error("the snapshot is larger than this node's raft.max_snapshot_bytes ({limit})")]
    SnapshotTooLarge { limit: u64 },

    /// Over mTLS, a Raft message from a node other than the one its certificate names.
    #[error("node {node} refuses the message: {why}")]
    MessageRefused { node: NodeId, why: String },
    /// Over mTLS, an admin request whose client certificate names no identity.
    #[error("{0}")]
    UnprovenIdentity(#[source] TlsError),
    /// Over mTLS, an admin request without a client certificate.
    #[error("the admin API needs a client certificate")]
    NoClientCertificate,
    /// Over mTLS, a request the certificate's holder may not make; `why` says so.
    #[error("{why}")]
    NotAllowed { why: String },

    /// Messages from `from` are dropped (fault injection).
    #[error("node {node} is partitioned from node {from} (fault injection)")]
    Partitioned { node: NodeId, from: NodeId },
    /// No leader is known.
    #[error("node {node} knows no leader (election under way, or no quorum reachable)")]
    NoLeader { node: NodeId },
    /// The leader is known but cut off (fault injection).
    #[error("node {node} is partitioned from the leader {leader} (fault injection)")]
    LeaderPartitioned { node: NodeId, leader: NodeId },
    /// The leader is known, its address is not.
    #[error("leader {leader} has no known address")]
    LeaderWithoutAddress { leader: NodeId },
    /// No client could be made for a peer's address.
    #[error("{0}")]
    Connect(#[source] TlsError),
    /// `what` did not commit within the write timeout.
    #[error(
        "{what} not committed within {timeout:?} by node {node}: no quorum reachable (is this node on the minority side of a partition?)"
    )]
    NoQuorum { what: &'static str, timeout: Duration, node: NodeId },
    /// openraft refused a write.
    #[error("node {node}: {source}")]
    Write { node: NodeId, source: Box<RaftError<TypeConfig, ClientWriteError<TypeConfig>>> },
    /// A forwarded write reached a node that has stopped leading.
    #[error("node {node} is no longer the leader (node {leader} is); retry")]
    NoLongerLeader { node: NodeId, leader: NodeId },
    /// The leader could not give a read index.
    #[error("node {node}: {source}")]
    ReadIndex { node: NodeId, source: Box<RaftError<TypeConfig, LinearizableReadError<TypeConfig>>> },
    /// This node did not apply up to the read index in time.
    #[error("node {node} did not apply up to index {index}: {source}")]
    NotApplied { node: NodeId, index: u64, source: WaitError },

    /// The cluster could not be initialised (e.g. it already is).
    #[error("node {node}: {source}")]
    Initialize { node: NodeId, source: Box<RaftError<TypeConfig, InitializeError<TypeConfig>>> },
    /// openraft refused a membership change.
    #[error("{0}")]
    MembershipChange(#[source] Box<RaftError<TypeConfig, ClientWriteError<TypeConfig>>>),
    /// Removing voter `node` would leave too few voters (no healthy learner to promote).
    #[error(
        "removing node {node} would leave {left} voter(s), and at least {needed} must remain; add a member (it joins as a learner and is promoted) first"
    )]
    TooFewVoters { node: NodeId, left: usize, needed: usize },
    /// `SetPartition` on a node started without fault injection.
    #[error("node {node} was started without fault injection (raft.fault_injection = true enables it)")]
    NoFaultInjection { node: NodeId },

    /// An answer did not encode.
    #[error("{0}")]
    Unencodable(#[source] serde_json::Error),
    /// openraft failed to handle a Raft message.
    #[error("{0}")]
    Raft(#[source] Box<RaftError<TypeConfig>>),
    /// openraft stopped while installing a snapshot.
    #[error("{0}")]
    Fatal(#[source] Box<Fatal<TypeConfig>>),
    /// The audit log could not be read.
    #[error("{0}")]
    Audit(#[source] std::io::Error),

    /// Another node's answer (or the request stream's own failure), relayed as it came.
    #[error("{}", .0.message())]
    Relayed(#[from] Status),
}

impl ServiceError {
    /// `field` of the request is wrong: `problem` says how.
    pub(crate) fn invalid(field: &'static str, problem: impl Into<FieldProblem>) -> Self {
        Self::InvalidField { field, problem: problem.into() }
    }

    /// The gRPC code a client gets for this error.
    pub(crate) fn code(&self) -> Code {
        match self {
            Self::InvalidField { .. }
            | Self::Request(_)
            | Self::UndecodableMessage(_)
            | Self::SnapshotWithoutHeader => Code::InvalidArgument,
            Self::SnapshotTooLarge { .. } => Code::ResourceExhausted,
            Self::MessageRefused { .. }
            | Self::UnprovenIdentity(_)
            | Self::NoClientCertificate
            | Self::NotAllowed { .. } => Code::PermissionDenied,
            Self::Partitioned { .. }
            | Self::NoLeader { .. }
            | Self::LeaderPartitioned { .. }
            | Self::LeaderWithoutAddress { .. }
            | Self::Connect(_)
            | Self::NoQuorum { .. }
            | Self::Write { .. }
            | Self::NoLongerLeader { .. }
            | Self::ReadIndex { .. }
            | Self::NotApplied { .. } => Code::Unavailable,
            Self::Initialize { .. }
            | Self::MembershipChange(_)
            | Self::TooFewVoters { .. }
            | Self::NoFaultInjection { .. } => Code::FailedPrecondition,
            Self::Unencodable(_) | Self::Raft(_) | Self::Fatal(_) | Self::Audit(_) => Code::Internal,
            Self::Relayed(status) => status.code(),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Relayed(status) => status,
            e => Status::new(e.code(), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RequestError;

    fn status(e: ServiceError) -> (Code, String) {
        let s = Status::from(e);
        (s.code(), s.message().to_string())
    }

    #[test]
    fn each_kind_keeps_its_code_and_message() {
        let invalid = ServiceError::invalid("nodes.addr", "node 3 has no address");
        assert_eq!(status(invalid), (Code::InvalidArgument, "nodes.addr: node 3 has no address".into()));
        let bounds = ServiceError::from(RequestError { field: "actor", problem: "is empty".into() });
        assert_eq!(status(bounds), (Code::InvalidArgument, "actor: is empty".into()));
        let forged = ServiceError::MessageRefused {
            node: 1,
            why: "the certificate is node 3's, the message claims node 1".into(),
        };
        assert_eq!(
            status(forged),
            (
                Code::PermissionDenied,
                "node 1 refuses the message: the certificate is node 3's, the message claims node 1".into()
            )
        );
        assert_eq!(
            status(ServiceError::NoClientCertificate),
            (Code::PermissionDenied, "the admin API needs a client certificate".into())
        );
        let minority = ServiceError::NoQuorum { what: "the write was", timeout: Duration::from_secs(5), node: 2 };
        assert_eq!(
            status(minority),
            (Code::Unavailable, "the write was not committed within 5s by node 2: no quorum reachable (is this node on the minority side of a partition?)".into())
        );
        let last = ServiceError::TooFewVoters { node: 4, left: 1, needed: 2 };
        assert_eq!(
            status(last),
            (
                Code::FailedPrecondition,
                "removing node 4 would leave 1 voter(s), and at least 2 must remain; add a member (it joins as a learner and is promoted) first".into()
            )
        );
        assert_eq!(
            status(ServiceError::Audit(std::io::Error::other("disk gone"))),
            (Code::Internal, "disk gone".into())
        );
        let relayed = ServiceError::from(Status::already_exists("from the leader"));
        assert_eq!(relayed.to_string(), "from the leader");
        assert_eq!(status(relayed), (Code::AlreadyExists, "from the leader".into()));
    }
}
