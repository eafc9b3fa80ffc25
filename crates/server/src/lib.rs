//! The `tessera` binary's library: configuration, the simulator, CSV replay, the telemetry
//! producer, topic creation, the embedded Kafka, the detection stage, a node (ingest +
//! detection + per-partition checkpoints + SQL endpoint), the control-plane commands, the SQL
//! endpoint, the evaluation and the demo. `main.rs` only parses the command line.
#![deny(missing_docs)]

pub mod bad_input;
pub mod cert;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod detect;
pub mod embedded;
pub mod eval;
pub mod fleet_stats;
pub mod migration;
pub mod node;
pub mod observe;
pub mod partition_state;
pub mod producer;
pub mod replay;
pub mod rules;
pub mod simulate;
pub mod sql;
pub mod storage;
pub mod telemetry;
pub mod topics;
