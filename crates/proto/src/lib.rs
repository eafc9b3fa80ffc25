//! Protobuf types generated from `/proto`, their conversions to Tessera's core types, the
//! JSON form of readings ([`json`]), encoded and decoded, and the ingest's borrowed decoding of
//! readings ([`borrowed`]).
//!
//! The conversions live here, in one place, so that the wire format can evolve without the
//! rest of the code noticing.
#![deny(missing_docs)]

pub mod borrowed;
mod convert;
pub mod json;

/// `tessera.telemetry.v1`: readings as motors and gateways publish them.
pub mod telemetry {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/tessera.telemetry.v1.rs"));
}

/// `tessera.raft.v1`: the control plane's Raft transport and admin API.
pub mod raft {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/tessera.raft.v1.rs"));
}

pub use convert::reading_from_proto;

/// The `content-type` header value of a Kafka message holding one [`telemetry::MotorReading`].
pub const CONTENT_TYPE_READING: &str = "application/x-protobuf; messageType=tessera.telemetry.v1.MotorReading";
/// The `content-type` header value of a Kafka message holding a [`telemetry::MotorReadingBatch`].
pub const CONTENT_TYPE_BATCH: &str = "application/x-protobuf; messageType=tessera.telemetry.v1.MotorReadingBatch";
/// The `content-type` header value of a Kafka message holding JSON readings.
pub const CONTENT_TYPE_JSON: &str = "application/json";
