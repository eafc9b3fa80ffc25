//! What drives and judges a Tessera cluster from outside: the fleet simulator with injected
//! faults ([`simulate`]), CSV replay of recorded data ([`csv_replay`]), the telemetry producer
//! and its wire formats ([`producer`]), bad input for the dead-letter path ([`bad_input`]),
//! librdkafka's mock cluster as an embedded Kafka ([`embedded`]), loopback ports reserved for
//! processes that must know each other's addresses ([`ports`]), the evaluation of the
//! detection on labelled data ([`eval`]) with simulated labelled scenarios ([`scenarios`]) and the
//! three-site demo ([`demo`]).
//!
//! It drives nodes through `tessera-node`'s public API; the node never imports it.
#![deny(missing_docs)]

pub mod bad_input;
pub mod csv_replay;
pub mod demo;
pub mod embedded;
pub mod error;
pub mod eval;
pub mod ports;
pub mod producer;
pub mod scenarios;
pub mod simulate;

pub use error::WorkloadError;
