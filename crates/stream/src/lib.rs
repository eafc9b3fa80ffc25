//! Tessera's stream stage: event-time windows over the ingest's per-shard batches, continuous
//! SQL queries on DataFusion over the closed windows, stateful anomaly functions, and alerts
//! with hysteresis.
//!
//! Layers, bottom up; a module imports only from rows below its own, never sideways or up:
//!
//! ```text
//! engine                                    all of it, driven by batches and a clock
//! health                                    the motor_health board (alerts and scores per motor)
//! alerts · query · quality · wear · shift   hysteresis, ids, tables · one planned query · data quality · wear · sudden shifts
//! windowing · preagg                        the window operator · the running-aggregate rewrite
//! schema · grammar · anomaly · tables · checkpoint · conform
//! aggregate · error · ids                   AggSpec, ColumnStats · StreamError · shared motor ids
//! ```
//!
//! The crate does no I/O: the server wires it to Kafka.

pub mod aggregate;
pub mod alerts;
pub mod anomaly;
pub mod checkpoint;
pub mod cold;
pub mod conform;
pub mod engine;
mod error;
pub mod grammar;
pub mod health;
pub mod ids;
pub mod preagg;
pub mod quality;
pub mod query;
pub mod schema;
pub mod shift;
pub mod slot;
pub mod tables;
pub mod wear;
pub mod windowing;

pub use alerts::{AlertEvent, AlertState, Severity};
pub use engine::{
    EngineStats, FailedRun, RestoreReport, StateDigest, StepOutput, StreamConfig, StreamEngine, state_digest,
};
pub use error::StreamError;
pub use schema::windowed_schema;
pub use windowing::WindowOperator;
