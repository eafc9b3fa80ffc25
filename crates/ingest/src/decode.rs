//! Decoding and validating one Kafka message into readings.
//!
//! A message is protobuf (`MotorReading` or `MotorReadingBatch`) or JSON (an object, an array,
//! or `{"readings": [...]}`); its `content-type` header says which, else the topic's
//! [`Encoding`]. Both encodings produce identical readings. A message that cannot be
//! decoded at all is rejected whole; in a batch, each invalid reading is rejected on its own
//! and the valid ones go on. The wire forms themselves (protobuf and JSON) are
//! [`tessera_proto`]'s.
//!
//! Protobuf readings are decoded borrowed ([`tessera_proto::borrowed`]): ids and extra names
//! stay slices of the message, so a reading costs no allocation on its way to the Arrow
//! builders. A message the borrowed reader leaves alone (malformed, or wire forms it does not
//! take) is decoded by prost, which then decides.

use prost::Message;
use tessera_core::{Reading, ReadingRef, RejectReason, ValidationRules};
use tessera_proto::borrowed::{read_batch, read_reading, reading_ref_from_wire};
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
pub struct DecodedMessage<'a> {
    /// The valid readings, in message order.
    pub readings: Readings<'a>,
    /// The invalid readings of a batch: their index in the batch and why.
    pub rejected: Vec<(usize, RejectReason)>,
}

/// A message's valid readings: borrowed from the message where they could be, else owned.
#[derive(Debug, Default, PartialEq)]
pub enum Readings<'a> {
    /// None.
    #[default]
    None,
    /// One reading (a `MotorReading` message): no list allocated.
    One(ReadingRef<'a>),
    /// Several, borrowed from the message.
    Many(Vec<ReadingRef<'a>>),
    /// Decoded into owned readings (JSON, and protobuf that prost decoded).
    Owned(Vec<Reading>),
}

impl Readings<'_> {
    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Readings::None => 0,
            Readings::One(_) => 1,
            Readings::Many(v) => v.len(),
            Readings::Owned(v) => v.len(),
        }
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each reading, borrowed, in message order.
    pub fn iter(&self) -> ReadingsIter<'_> {
        let (one, many, owned): (Option<&ReadingRef<'_>>, &[ReadingRef<'_>], &[Reading]) = match self {
            Readings::None => (None, &[], &[]),
            Readings::One(r) => (Some(r), &[], &[]),
            Readings::Many(v) => (None, v, &[]),
            Readings::Owned(v) => (None, &[], v),
        };
        ReadingsIter { one, many: many.iter(), owned: owned.iter() }
    }

    /// Owned copies (tests and tools).
    pub fn to_vec(&self) -> Vec<Reading> {
        self.iter().map(|r| r.to_reading()).collect()
    }
}

/// The iterator of [`Readings::iter`] (no allocation: one of its three parts is non-empty).
pub struct ReadingsIter<'r> {
    one: Option<&'r ReadingRef<'r>>,
    many: std::slice::Iter<'r, ReadingRef<'r>>,
    owned: std::slice::Iter<'r, Reading>,
}

impl<'r> Iterator for ReadingsIter<'r> {
    type Item = ReadingRef<'r>;

    fn next(&mut self) -> Option<ReadingRef<'r>> {
        if let Some(r) = self.one.take() {
            return Some(r.clone());
        }
        if let Some(r) = self.many.next() {
            return Some(r.clone());
        }
        self.owned.next().map(Reading::view)
    }
}

/// Decodes and validates one message. `Err` rejects the whole message.
pub fn decode_message<'a>(
    payload: &'a [u8],
    content_type: Option<&[u8]>,
    default: Encoding,
    limits: MessageLimits,
    rules: &ValidationRules,
    now_ms: i64,
) -> Result<DecodedMessage<'a>, RejectReason> {
    if payload.len() > limits.max_message_bytes {
        return Err(RejectReason::Oversize { bytes: payload.len(), limit: limits.max_message_bytes });
    }
    let encoding = match content_type {
        Some(ct) => encoding_of(ct)?,
        None => default,
    };
    let check = |r: Result<Reading, RejectReason>| r.and_then(|r| rules.check(&r, now_ms).map(|()| r));
    let check_ref = |r: Result<ReadingRef<'a>, RejectReason>| r.and_then(|r| rules.check_ref(&r, now_ms).map(|()| r));
    let malformed = |e: prost::DecodeError| RejectReason::Malformed(e.to_string());
    match encoding {
        Encoding::ProtobufReading => {
            let readings = match read_reading(payload) {
                Some(wire) => Readings::One(check_ref(reading_ref_from_wire(wire))?),
                None => {
                    Readings::Owned(vec![check(reading_from_proto(MotorReading::decode(payload).map_err(malformed)?))?])
                }
            };
            Ok(DecodedMessage { readings, rejected: Vec::new() })
        }
        Encoding::ProtobufBatch => match read_batch(payload) {
            Some(wire) => {
                check_count(wire.len(), limits)?;
                let (readings, rejected) = split(wire.into_iter().map(|w| check_ref(reading_ref_from_wire(w))));
                Ok(DecodedMessage { readings: Readings::Many(readings), rejected })
            }
            None => {
                let batch = MotorReadingBatch::decode(payload).map_err(malformed)?;
                check_count(batch.readings.len(), limits)?;
                let (readings, rejected) = split(batch.readings.into_iter().map(|m| check(reading_from_proto(m))));
                Ok(DecodedMessage { readings: Readings::Owned(readings), rejected })
            }
        },
        Encoding::Json => {
            match JsonMessage::parse(payload).map_err(|e| RejectReason::Malformed(format!("json: {e}")))? {
                JsonMessage::Batch(items) => {
                    check_count(items.len(), limits)?;
                    let (readings, rejected) = split(items.into_iter().map(|j| check(reading_from_json(j))));
                    Ok(DecodedMessage { readings: Readings::Owned(readings), rejected })
                }
                JsonMessage::One(j) => Ok(DecodedMessage {
                    readings: Readings::Owned(vec![check(reading_from_json(*j))?]),
                    rejected: Vec::new(),
                }),
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

/// The valid readings of a batch, and the invalid ones' indices and reasons.
fn split<R>(results: impl Iterator<Item = Result<R, RejectReason>>) -> (Vec<R>, Vec<(usize, RejectReason)>) {
    let (mut readings, mut rejected) = (Vec::new(), Vec::new());
    for (i, r) in results.enumerate() {
        match r {
            Ok(r) => readings.push(r),
            Err(reason) => rejected.push((i, reason)),
        }
    }
    (readings, rejected)
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

    fn decode<'a>(payload: &'a [u8], ct: Option<&str>, default: Encoding) -> Result<DecodedMessage<'a>, RejectReason> {
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
        let proto_bytes = proto_batch.encode_to_vec();
        let from_proto = decode(&proto_bytes, Some(CONTENT_TYPE_BATCH), Encoding::Json).unwrap();

        let json = serde_json::json!([0, 1, 2].map(|s| serde_json::json!({
            "motor_id": format!("M{s}"), "site_id": "site-a",
            "event_time_ms": (NOW - 1000 + s).to_string(), "sequence": s,
            "current_a": 12.5, "voltage_v": 401.25, "temperature_c": 61.0,
            "vibration_x_rms": 2.5, "vibration_y_rms": 2.25, "speed_rpm": 1480.0,
            "extra": {"pressure_bar": 1.5}
        })));
        let json_text = json.to_string();
        let from_json = decode(json_text.as_bytes(), None, Encoding::Json).unwrap();
        assert_eq!(from_proto.readings.to_vec(), readings);
        assert_eq!(from_json.readings.to_vec(), readings);

        let wrapped = serde_json::json!({ "readings": json });
        assert_eq!(
            decode(wrapped.to_string().as_bytes(), Some("application/json"), Encoding::ProtobufReading)
                .unwrap()
                .readings
                .to_vec(),
            readings
        );

        let one = MotorReading::from(&readings[1]).encode_to_vec();
        assert_eq!(decode(&one, None, Encoding::ProtobufReading).unwrap().readings.to_vec(), vec![readings[1].clone()]);
    }

    #[test]
    fn protobuf_is_decoded_borrowed_and_prost_takes_what_the_borrowed_reader_leaves() {
        let reading = MotorReading::from(&sample(1)).encode_to_vec();
        let out = decode(&reading, None, Encoding::ProtobufReading).unwrap();
        assert!(matches!(out.readings, Readings::One(_)), "{out:?}");
        assert_eq!(out.readings.to_vec(), vec![sample(1)]);
        let batch = MotorReadingBatch { readings: vec![(&sample(0)).into(), (&sample(2)).into()] }.encode_to_vec();
        let out = decode(&batch, None, Encoding::ProtobufBatch).unwrap();
        assert!(matches!(out.readings, Readings::Many(_)), "{out:?}");
        assert_eq!(out.readings.to_vec(), vec![sample(0), sample(2)]);
        // An unknown field sent as a (deprecated) group: prost skips it, the borrowed reader
        // leaves the message to prost, and the reading is the same.
        let mut with_group = reading.clone();
        with_group.extend_from_slice(&[0x9b, 0x06, 0x08, 0x01, 0x9c, 0x06]);
        let out = decode(&with_group, None, Encoding::ProtobufReading).unwrap();
        assert!(matches!(out.readings, Readings::Owned(_)), "{out:?}");
        assert_eq!(out.readings.to_vec(), vec![sample(1)]);
        // Malformed for both: prost's error is the one reported.
        let err = decode(&reading[..reading.len() - 3], None, Encoding::ProtobufReading).unwrap_err();
        assert_eq!(err.code(), "malformed", "{err}");
    }

    #[test]
    fn a_bad_reading_in_a_batch_spares_its_neighbours() {
        let mut bad = sample(1);
        bad.set(Channel::TemperatureC, Some(f64::NAN));
        let batch = MotorReadingBatch { readings: vec![(&sample(0)).into(), (&bad).into(), (&sample(2)).into()] };
        let bytes = batch.encode_to_vec();
        let out = decode(&bytes, None, Encoding::ProtobufBatch).unwrap();
        assert_eq!(out.readings.to_vec(), vec![sample(0), sample(2)]);
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
        let bytes = MotorReadingBatch { readings: four }.encode_to_vec();
        let err = decode(&bytes, None, Encoding::ProtobufBatch);
        assert_eq!(err.unwrap_err().code(), "too_many_readings");
        let mut future = sample(0);
        future.event_time_ms = NOW + 86_400_000;
        let bytes = MotorReading::from(&future).encode_to_vec();
        let err = decode(&bytes, None, Encoding::ProtobufReading);
        assert_eq!(err.unwrap_err().code(), "future_event_time");
        let missing = br#"{"motor_id":"M1","site_id":"s","sequence":1,"current_a":3}"#;
        assert_eq!(decode(missing, None, Encoding::Json), Err(RejectReason::MissingField("event_time_ms")));
    }
}
