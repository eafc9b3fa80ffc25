//! The node's gRPC services: the Raft transport's server side and the admin API.
//!
//! Any node answers the admin API. A write is checked, stamped (actor, time) and proposed; on
//! a follower it is forwarded to the leader. A read is linearizable: the leader confirms its
//! leadership with a quorum (read index) and the answering node waits until its state machine
//! has applied that far before reading. A write that is not committed within the configured
//! time (no quorum reachable, e.g. on the minority side of a partition) fails with
//! `UNAVAILABLE` and says so.
//!
//! Over mTLS, a Raft message must come from the node its certificate names (the sender id in
//! the message, and the node id in the vote it carries), or it is refused with
//! `PERMISSION_DENIED`, counted and audited; and the audit log records the actor the client
//! certificate proves, not the name the request claims.
//!
//! Modules, bottom up (each uses only those before it):
//! - `error`: why a request failed, and the one mapping of each kind to a gRPC code;
//! - `wire`: a Raft message's JSON payload, both ways;
//! - `quorum`: what both services share — the node's Raft handle and settings, and how a
//!   request reaches the quorum (writes proposed or forwarded, reads behind a read barrier);
//! - `authorize`: who may do what — the one function that decides every Raft message and
//!   admin request, directly and when forwarded;
//! - `rebalance`: the leader's voter keeper — a bounded voter set spread over sites, and a new
//!   cluster's first voters and learners;
//! - `raft_transport`: the Raft RPCs between members, with the mTLS sender checks;
//! - `admin`: the admin API (membership, registry, policies, queries, releases).

mod admin;
mod authorize;
mod error;
mod quorum;
mod raft_transport;
mod rebalance;
mod wire;

pub(crate) use admin::AdminService;
pub use admin::{APPLIED_INDEX_HEADER, READ_HEADER};
pub(crate) use authorize::Action;
pub(crate) use error::ServiceError;
pub(crate) use quorum::Shared;
pub(crate) use raft_transport::TransportService;
pub(crate) use rebalance::keep_voters_balanced;
