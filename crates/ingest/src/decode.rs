//! Decoding and validating one Kafka message into readings.
//!
//! A message is protobuf (`MotorReading` or `MotorReadingBatch`) or JSON (an object, an array,
//! or `{"readings": [...]}`); its `content-type` header says which, else the topic's
//! [`Encoding`]. Both encodings produce identical [`Reading`]s. A message that cannot be
//! decoded at all is rejected whole; in a batch, each invalid reading is rejected on its own
//! and the valid ones go on. The wire forms themselves (protobuf and JSON) are
//! [`tessera_proto`]'s.

use prost::Message;
use tessera_core::{Reading, RejectReason, ValidationRules};
use tessera_proto::json::{JsonMessage, reading_from_json};
use tessera_proto::telemetry::{MotorReading, MotorReadingBatch};
use tessera_proto::{CONTENT_TYPE_BATCH, CONTENT_TYPE_JSON, CONTENT_TYPE_READING, reading_from_proto};

use crate::Encoding;

/// Size limits applied before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest accepted message, in bytes.
    pub max_message_bytes: usize,
    /// Most readings in one batch message.
    pub max_readings_per_message: usize,
}

/// What one message yielded.
#[derive(Debug, Default, PartialEq)]
pub struct DecodedMessage {
    /// The valid readings, in message order.
    pub readings: Vec<Reading>,
    /// The invalid readings of a batch: their index in the batch and why.
    pub rejected: Vec<(usize, RejectReason)>,
}

/// Decodes and validates one message. `Err` rejects the whole message.
pub fn decode_message(
    payload: &[u8],
    content_type: Option<&[u8]>,
    default: Encoding,
    limits: MessageLimits,
    rules: &ValidationRules,
    now_ms: i64,
) -> Result<DecodedMessage, RejectReason> {
    if payload.len() > limits.max_message_bytes {
        return Err(RejectReason::Oversize { bytes: payload.len(), limit: limits.max_message_bytes });
    }
    let encoding = match content_type {
        Some(ct) => encoding_of(ct)?,
        None => default,
    };
    let check = |r: Result<Reading, RejectReason>| r.and_then(|r| rules.check(&r, now_ms).map(|()| r));
    match encoding {
        Encoding::ProtobufReading => {
            let m = MotorReading::decode(payload).map_err(|e| RejectReason::Malformed(e.to_string()))?;
            Ok(DecodedMessage { readings: vec![check(reading_from_proto(m))?], rejected: Vec::new() })
        }
        Encoding::ProtobufBatch => {
            let batch = MotorReadingBatch::decode(payload).map_err(|e| RejectReason::Malformed(e.to_string()))?;
            check_count(batch.readings.len(), limits)?;
            Ok(split(batch.readings.into_iter().map(|m| check(reading_from_proto(m)))))
        }
        Encoding::Json => {
            match JsonMessage::parse(payload).map_err(|e| RejectReason::Malformed(format!("json: {e}")))? {
                JsonMessage::Batch(items) => {
                    check_count(items.len(), limits)?;
                    Ok(split(items.into_iter().map(|j| check(reading_from_json(j)))))
                }
                JsonMessage::One(j) => {
                    Ok(DecodedMessage { readings: vec![check(reading_from_json(*j))?], rejected: Vec::new() })
                }
            }
        }
    }
}

fn check_count(count: usize, limits: MessageLimits) -> Result<(), RejectReason> {
    if count > limits.max_readings_per_message {
        return Err(RejectReason::TooManyReadings { count, limit: limits.max_readings_per_message });
    }
    Ok(())
}

fn split(results: impl Iterator<Item = Result<Reading, RejectReason>>) -> DecodedMessage {
    let mut out = DecodedMessage::default();
    for (i, r) in results.enumerate() {
        match r {
            Ok(r) => out.readings.push(r),
            Err(reason) => out.rejected.push((i, reason)),
        }
    }
    out
}

/// Maps a `content-type` header to an encoding.
fn encoding_of(content_type: &[u8]) -> Result<Encoding, RejectReason> {
    let ct = std::str::from_utf8(content_type)
        .map_err(|_| RejectReason::Malformed("content-type header is not UTF-8".into()))?;
    if ct == CONTENT_TYPE_READING {
        return Ok(Encoding::ProtobufReading);
    }
    if ct == CONTENT_TYPE_BATCH {
        return Ok(Encoding::ProtobufBatch);
    }
    let base = ct.split(';').next().unwrap_or("").trim();
    if base.eq_ignore_ascii_case(CONTENT_TYPE_JSON) {
        return Ok(Encoding::Json);
    }
    // Protobuf with parameters in another order or spacing.
    if base.eq_ignore_ascii_case("application/x-protobuf") {
        if ct.contains("tessera.telemetry.v1.MotorReadingBatch") {
            return Ok(Encoding::ProtobufBatch);
        }
        if ct.contains("tessera.telemetry.v1.MotorReading") {
            return Ok(Encoding::ProtobufReading);
        }
    }
    Err(RejectReason::Malformed(format!("unsupported content-type {ct:?}")))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tessera_core::{Channel, MotorId, SiteId};

    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const LIMITS: MessageLimits = MessageLimits { max_message_bytes: 4096, max_readings_per_message: 3 };

    fn decode(payload: &[u8], ct: Option<&str>, default: Encoding) -> Result<DecodedMessage, RejectReason> {
        decode_message(payload, ct.map(str::as_bytes), default, LIMITS, &ValidationRules::default(), NOW)
    }

    fn sample(seq: u64) -> Reading {
        Reading {
            motor_id: MotorId::new(format!("M{seq}")).unwrap(),
            site_id: SiteId::new("site-a").unwrap(),
            event_time_ms: NOW - 1000 + seq as i64,
            sequence: seq,
            channels: [Some(12.5), Some(401.25), Some(61.0), Some(2.5), Some(2.25), None, Some(1480.0)],
            extra: BTreeMap::from([("pressure_bar".into(), 1.5)]),
        }
    }

    #[test]
    fn protobuf_and_json_decode_to_identical_readings() {
        let readings: Vec<Reading> = (0..3).map(sample).collect();
        let proto_batch = MotorReadingBatch { readings: readings.iter().map(MotorReading::from).collect() };
        let from_proto = decode(&proto_batch.encode_to_vec(), Some(CONTENT_TYPE_BATCH), Encoding::Json).unwrap();

        let json = serde_json::json!([0, 1, 2].map(|s| serde_json::json!({
            "motor_id": format!("M{s}"), "site_id": "site-a",
            "event_time_ms": (NOW - 1000 + s).to_string(), "sequence": s,
            "current_a": 12.5, "voltage_v": 401.25, "temperature_c": 61.0,
            "vibration_x_rms": 2.5, "vibration_y_rms": 2.25, "speed_rpm": 1480.0,
            "extra": {"pressure_bar": 1.5}
        })));
        let from_json = decode(json.to_string().as_bytes(), None, Encoding::Json).unwrap();
        assert_eq!(from_proto.readings, readings);
        assert_eq!(from_json.readings, readings);

        let wrapped = serde_json::json!({ "readings": json });
        assert_eq!(
            decode(wrapped.to_string().as_bytes(), Some("application/json"), Encoding::ProtobufReading)
                .unwrap()
                .readings,
            readings
        );

        let one = MotorReading::from(&readings[1]).encode_to_vec();
        assert_eq!(decode(&one, None, Encoding::ProtobufReading).unwrap().readings, vec![readings[1].clone()]);
    }

    #[test]
    fn a_bad_reading_in_a_batch_spares_its_neighbours() {
        let mut bad = sample(1);
        bad.set(Channel::TemperatureC, Some(f64::NAN));
        let batch = MotorReadingBatch { readings: vec![(&sample(0)).into(), (&bad).into(), (&sample(2)).into()] };
        let out = decode(&batch.encode_to_vec(), None, Encoding::ProtobufBatch).unwrap();
        assert_eq!(out.readings, vec![sample(0), sample(2)]);
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].0, 1);
        assert_eq!(out.rejected[0].1.code(), "not_finite");
    }

    #[test]
    fn whole_message_rejections() {
        assert_eq!(decode(&[0u8; 5000], None, Encoding::Json).unwrap_err().code(), "oversize");
        assert_eq!(decode(b"{not json", None, Encoding::Json).unwrap_err().code(), "malformed");
        assert_eq!(decode(b"\xff\xff\xff", None, Encoding::ProtobufReading).unwrap_err().code(), "malformed");
        assert_eq!(decode(b"{}", Some("text/plain"), Encoding::Json).unwrap_err().code(), "malformed");
        let unknown = br#"{"motor_id":"M1","site_id":"s","event_time_ms":1,"sequence":1,"temprature_c":3}"#;
        let err = decode(unknown, None, Encoding::Json).unwrap_err();
        assert!(err.to_string().contains("temprature_c"), "{err}");
        let four: Vec<MotorReading> = (0..4).map(|s| (&sample(s)).into()).collect();
        let err = decode(&MotorReadingBatch { readings: four }.encode_to_vec(), None, Encoding::ProtobufBatch);
        assert_eq!(err.unwrap_err().code(), "too_many_readings");
        let mut future = sample(0);
        future.event_time_ms = NOW + 86_400_000;
        let err = decode(&MotorReading::from(&future).encode_to_vec(), None, Encoding::ProtobufReading);
        assert_eq!(err.unwrap_err().code(), "future_event_time");
        let missing = br#"{"motor_id":"M1","site_id":"s","sequence":1,"current_a":3}"#;
        assert_eq!(decode(missing, None, Encoding::Json), Err(RejectReason::MissingField("event_time_ms")));
    }
}
