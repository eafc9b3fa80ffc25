//! Tessera's domain types, shared by every other crate.
//!
//! This crate has no I/O and no async runtime: it holds what a reading *is* ([`Reading`], or borrowed
//! from the message it came in: [`ReadingRef`]),
//! who it belongs to ([`MotorId`], [`SiteId`]), how sensitive it is ([`DataGrade`],
//! [`DataStage`], per column: [`GradeMap`]), how it looks as Arrow columns
//! ([`telemetry_schema`]), which readings are acceptable ([`ValidationRules`]), and how motors
//! are spread over shards ([`shard_of`]), and how event time is cut into windows
//! ([`WindowSpec`], [`MotorWatermark`]), how long things took ([`LatencyHistogram`]), which
//! config field is wrong ([`ConfigError`]), an error with its causes as text ([`error_chain`])
//! what time it is ([`now_ms`]) and the vibration zones of a machine class
//! ([`MachineClass`]). Everything here is
//! pure and cheap to test.
#![deny(missing_docs)]

mod clock;
mod column_grades;
mod config_error;
pub mod duration_millis;
mod error_chain;
mod grade;
mod group_rule;
mod ids;
mod latency;
mod machine_class;
mod reading;
mod schema;
mod shard;
mod validate;
mod window;

pub use clock::now_ms;
pub use column_grades::{GRADE_METADATA_KEY, GradeMap, LiveGrades, StreamGrades, field_grade, with_grade};
pub use config_error::{ConfigError, ensure};
pub use error_chain::error_chain;
pub use grade::{DataGrade, DataStage, UnknownName};
pub use group_rule::GroupRule;
pub use ids::{IdError, MAX_ID_BYTES, MotorId, SiteId};
pub use latency::{LATENCY_BUCKETS_S, LatencyHistogram, LatencySnapshot};
pub use machine_class::{MAX_ZONE_BOUNDARY_MM_S, MachineClass, zone_boundaries};
pub use reading::{Channel, Extras, Reading, ReadingFingerprint, ReadingRef};
pub use schema::{TelemetryColumn, telemetry_schema};
pub use shard::{shard_of, shard_of_id};
pub use validate::{PhysicalRange, RejectReason, ValidationRules};
pub use window::{MotorWatermark, WatermarkPolicy, Window, WindowError, WindowSpec};
