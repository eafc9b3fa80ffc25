//! The cross-site control plane (`tessera-consensus`): one Raft group (openraft) spanning the
//! sites, agreeing on membership, the motor → site registry, continuous query definitions,
//! data-grade policies and an audit log — metadata only; raw telemetry never enters the log.
//!
//! Layers, bottom up:
//! - [`types`]: the Raft type configuration and the registry commands a log entry carries;
//! - [`registry`]: the registry and how a command changes it (pure, deterministic);
//! - [`voters`]: which members should vote, a bounded set spread over sites (pure; the
//!   leader's voter keeper applies it, see the services);
//! - [`log_store`] and [`state_machine`]: the log and the state machine on disk (redb), with
//!   snapshots and log purge, checked by openraft's storage conformance suite;
//! - [`network`] and the services: Raft over tonic gRPC (`proto/raft.proto`) and the admin API;
//! - [`node`]: a running node, wiring all of it to a listening socket.
#![deny(missing_docs)]

mod error;
pub mod log_store;
pub mod network;
pub mod node;
pub mod registry;
mod service;
pub mod state_machine;
pub mod types;
pub mod voters;

pub use error::{ConsensusError, DeskError};
pub use node::{AlertDesk, ConsensusNode, RaftSettings, RaftStatus};
pub use service::{APPLIED_INDEX_HEADER, READ_HEADER};
pub use types::{Command, Member, NodeId, Outcome, Request, TypeConfig};

/// A Raft node of the control plane.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;

#[cfg(test)]
mod conformance;
