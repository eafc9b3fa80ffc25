//! A Tessera node at run time: what `tessera node` runs, as a library.
//!
//! [`node::Node`] wires the parts: the ingest (`tessera-ingest`) hands shard batches to the
//! detection stage ([`detect`], the stream engine on its own thread), which checkpoints per
//! Kafka partition ([`checkpoints`]) and feeds the site store ([`store`]), checkpointing only
//! what the store holds durably ([`durability`]); the SQL endpoint
//! ([`sql`]) serves the engine's and the store's tables; [`observe`] serves `/metrics` and
//! the health checks; [`control`] keeps the cluster-wide queries in step and runs a Raft member
//! in the process. Each feature owns its config section; [`config`] only assembles them.
//!
//! Nothing here imports the command line or the workload tools (simulator, replay, demo).
#![deny(missing_docs)]

pub mod api;
pub mod checkpoints;
pub mod config;
pub mod console;
pub mod control;
pub mod detect;
pub mod durability;
pub mod error;
pub mod lifecycle;
pub mod node;
pub mod notify;
pub mod observe;
pub mod sql;
pub mod store;
pub mod telemetry;
pub mod topics;
pub mod views;

pub use error::NodeError;
