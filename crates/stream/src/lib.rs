//! Tessera's stream stage: event-time windows over the ingest's per-shard batches, continuous
//! SQL queries on DataFusion over the closed windows, stateful anomaly functions, and alerts
//! with hysteresis.
//!
//! Layers, bottom up: [`windowing`] (per-motor watermarks, buffering, late path) →
//! [`grammar`] (`CREATE CONTINUOUS QUERY`) and [`anomaly`] (the functions) → [`query`] (one
//! planned query) → [`alerts`] (hysteresis, ids, tables) → [`engine`] (all of it, driven by
//! batches and a clock). The crate does no I/O: the server wires it to Kafka.

pub mod alerts;
pub mod anomaly;
pub mod checkpoint;
pub mod conform;
pub mod engine;
mod error;
pub mod grammar;
pub mod preagg;
pub mod query;
pub mod tables;
pub mod windowing;

pub use alerts::{AlertEvent, AlertState, Severity};
pub use engine::{EngineStats, FailedRun, RestoreReport, StateDigest, StepOutput, StreamConfig, StreamEngine, state_digest};
pub use error::StreamError;
pub use windowing::{WindowOperator, windowed_schema};
