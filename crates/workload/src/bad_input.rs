//! Deliberately bad messages, as broken gateways send them: used by the demo to show the
//! dead-letter path and by tests to prove that nothing is lost or crashes.

use prost::Message as _;
use tessera_core::{Channel, Reading};
use tessera_proto::telemetry::MotorReading;
use tessera_proto::{CONTENT_TYPE_JSON, CONTENT_TYPE_READING};

/// The kinds of bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadInput {
    /// Bytes that are not protobuf.
    Malformed,
    /// A message larger than the ingest's limit (`bytes`).
    Oversize(usize),
    /// A reading with a NaN temperature.
    NotFinite,
    /// A reading dated a day ahead of `now`.
    FarFuture,
    /// JSON with a misspelled field.
    UnknownJsonField,
}

impl BadInput {
    /// Every kind, with an oversize message of `oversize_bytes`.
    pub fn all(oversize_bytes: usize) -> [BadInput; 5] {
        [
            BadInput::Malformed,
            BadInput::Oversize(oversize_bytes),
            BadInput::NotFinite,
            BadInput::FarFuture,
            BadInput::UnknownJsonField,
        ]
    }

    /// The reject code the ingest gives it.
    pub fn expected_code(self) -> &'static str {
        match self {
            BadInput::Malformed | BadInput::UnknownJsonField => "malformed",
            BadInput::Oversize(_) => "oversize",
            BadInput::NotFinite => "not_finite",
            BadInput::FarFuture => "future_event_time",
        }
    }

    /// The message's payload and content type, built from an otherwise valid `template`.
    pub fn encode(self, template: &Reading, now_ms: i64) -> (Vec<u8>, &'static str) {
        let mut r = template.clone();
        match self {
            BadInput::Malformed => {
                (b"\x0a\xff\xff\xff\xff garbage from a broken gateway".to_vec(), CONTENT_TYPE_READING)
            }
            BadInput::Oversize(bytes) => {
                r.extra.insert("padding".into(), 0.0);
                let mut m = MotorReading::from(&r);
                m.extra.insert("x".repeat(bytes), 1.0);
                (m.encode_to_vec(), CONTENT_TYPE_READING)
            }
            BadInput::NotFinite => {
                r.set(Channel::TemperatureC, Some(f64::NAN));
                (MotorReading::from(&r).encode_to_vec(), CONTENT_TYPE_READING)
            }
            BadInput::FarFuture => {
                r.event_time_ms = now_ms + 86_400_000;
                (MotorReading::from(&r).encode_to_vec(), CONTENT_TYPE_READING)
            }
            BadInput::UnknownJsonField => {
                let json = format!(
                    r#"{{"motor_id":"{}","site_id":"{}","event_time_ms":{},"sequence":{},"temprature_c":61.5}}"#,
                    r.motor_id, r.site_id, r.event_time_ms, r.sequence
                );
                (json.into_bytes(), CONTENT_TYPE_JSON)
            }
        }
    }
}
