//! The JSON wire form of readings, both ways: [`reading_to_json`] writes one, [`JsonMessage`]
//! parses a message of one or many, [`reading_from_json`] checks one into a core reading.
//!
//! The JSON form follows the protobuf messages: the same field names, 64-bit integers as
//! numbers or strings (as proto3's JSON mapping writes them), absent channels left out. A JSON
//! reading and its protobuf form decode to identical [`Reading`]s.

use std::collections::BTreeMap;

use serde::Deserialize;
use tessera_core::{Channel, MotorId, Reading, RejectReason, SiteId};

/// One reading in JSON: an object with the protobuf field names, absent channels omitted.
pub fn reading_to_json(r: &Reading) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    o.insert("motor_id".into(), r.motor_id.as_str().into());
    o.insert("site_id".into(), r.site_id.as_str().into());
    o.insert("event_time_ms".into(), r.event_time_ms.into());
    o.insert("sequence".into(), r.sequence.into());
    for c in Channel::ALL {
        if let Some(v) = r.get(c) {
            o.insert(c.name().into(), v.into());
        }
    }
    if !r.extra.is_empty() {
        o.insert(
            "extra".into(),
            r.extra.iter().map(|(k, v)| (k.clone(), (*v).into())).collect::<serde_json::Map<_, _>>().into(),
        );
    }
    o.into()
}

/// A JSON message, parsed but not yet checked: an object is one reading; an array, or an
/// object with only `readings`, is a batch.
#[derive(Debug)]
pub enum JsonMessage {
    /// One reading.
    One(Box<JsonReading>),
    /// A batch of readings, in message order.
    Batch(Vec<JsonReading>),
}

impl JsonMessage {
    /// Parses a message. The shape is told by the first byte so that serde's errors stay
    /// precise (an unknown field is named, for instance).
    pub fn parse(payload: &[u8]) -> serde_json::Result<JsonMessage> {
        let first = payload.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            return serde_json::from_slice(payload).map(JsonMessage::Batch);
        }
        let mut one: JsonReading = serde_json::from_slice(payload)?;
        match one.readings.take() {
            Some(items) if one.has_no_identity() => Ok(JsonMessage::Batch(items)),
            Some(_) => {
                Err(serde::de::Error::custom("an object with `readings` must have no reading fields of its own"))
            }
            None => Ok(JsonMessage::One(Box::new(one))),
        }
    }
}

/// One reading as JSON carries it (every field optional, so that a missing one is named by
/// [`reading_from_json`]); unknown fields are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonReading {
    motor_id: Option<String>,
    site_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_int")]
    event_time_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    sequence: Option<u64>,
    current_a: Option<f64>,
    voltage_v: Option<f64>,
    temperature_c: Option<f64>,
    vibration_x_rms: Option<f64>,
    vibration_y_rms: Option<f64>,
    vibration_z_rms: Option<f64>,
    speed_rpm: Option<f64>,
    #[serde(default)]
    extra: BTreeMap<String, f64>,
    /// Only on the wrapper object `{"readings": [...]}` of a batch.
    readings: Option<Vec<JsonReading>>,
}

impl JsonReading {
    fn has_no_identity(&self) -> bool {
        self.motor_id.is_none() && self.site_id.is_none() && self.event_time_ms.is_none() && self.sequence.is_none()
    }
}

/// Builds a core reading from its JSON form, checking the identity fields, like
/// [`crate::reading_from_proto`]. Value checks are [`tessera_core::ValidationRules::check`]'s job.
pub fn reading_from_json(j: JsonReading) -> Result<Reading, RejectReason> {
    let motor_id = MotorId::new(j.motor_id.unwrap_or_default()).map_err(RejectReason::BadId)?;
    let site_id = SiteId::new(j.site_id.unwrap_or_default()).map_err(RejectReason::BadId)?;
    Ok(Reading {
        motor_id,
        site_id,
        event_time_ms: j.event_time_ms.ok_or(RejectReason::MissingField("event_time_ms"))?,
        sequence: j.sequence.ok_or(RejectReason::MissingField("sequence"))?,
        channels: [
            j.current_a,
            j.voltage_v,
            j.temperature_c,
            j.vibration_x_rms,
            j.vibration_y_rms,
            j.vibration_z_rms,
            j.speed_rpm,
        ],
        extra: j.extra,
    })
}

/// Accepts `123` or `"123"` for a 64-bit integer.
fn lenient_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString<T> {
        Int(T),
        Str(String),
    }
    match Option::<IntOrString<T>>::deserialize(d)? {
        None => Ok(None),
        Some(IntOrString::Int(v)) => Ok(Some(v)),
        Some(IntOrString::Str(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(sequence: u64) -> Reading {
        Reading {
            motor_id: MotorId::new("M7").unwrap(),
            site_id: SiteId::new("site-b").unwrap(),
            event_time_ms: 1_700_000_000_123,
            sequence,
            channels: [Some(12.5), Some(401.0), None, Some(2.1), Some(1.9), None, Some(1475.0)],
            extra: BTreeMap::from([("pressure_bar".into(), 3.25)]),
        }
    }

    fn only(message: JsonMessage) -> Vec<Reading> {
        let items = match message {
            JsonMessage::One(one) => vec![*one],
            JsonMessage::Batch(items) => items,
        };
        items.into_iter().map(|j| reading_from_json(j).unwrap()).collect()
    }

    #[test]
    fn round_trips_through_bytes() {
        let r = reading(42);
        let bytes = serde_json::to_vec(&reading_to_json(&r)).unwrap();
        assert_eq!(only(JsonMessage::parse(&bytes).unwrap()), vec![r]);

        let batch: Vec<Reading> = (0..3).map(reading).collect();
        let array = serde_json::Value::Array(batch.iter().map(reading_to_json).collect());
        assert_eq!(only(JsonMessage::parse(array.to_string().as_bytes()).unwrap()), batch);
        let wrapped = serde_json::json!({ "readings": array });
        assert_eq!(only(JsonMessage::parse(wrapped.to_string().as_bytes()).unwrap()), batch);
    }

    #[test]
    fn the_encoding_leaves_absent_channels_out() {
        let json = reading_to_json(&reading(1));
        assert_eq!(json["event_time_ms"], 1_700_000_000_123_i64);
        assert_eq!(json["extra"]["pressure_bar"], 3.25);
        assert!(json.get("temperature_c").is_none() && json.get("vibration_z_rms").is_none());
    }

    #[test]
    fn integers_may_be_strings_and_problems_are_named() {
        let text = br#"{"motor_id":"M1","site_id":"s","event_time_ms":"1700000000000","sequence":"3","current_a":1}"#;
        let back = only(JsonMessage::parse(text).unwrap());
        assert_eq!((back[0].event_time_ms, back[0].sequence), (1_700_000_000_000, 3));

        let unknown = JsonMessage::parse(br#"{"motor_id":"M1","temprature_c":3}"#).unwrap_err();
        assert!(unknown.to_string().contains("temprature_c"), "{unknown}");
        assert!(
            JsonMessage::parse(br#"{"motor_id":"M1","readings":[]}"#).is_err(),
            "a batch wrapper with fields of its own"
        );
        let JsonMessage::One(missing) = JsonMessage::parse(br#"{"motor_id":"M1","site_id":"s","sequence":1}"#).unwrap()
        else {
            panic!("one reading")
        };
        assert_eq!(reading_from_json(*missing), Err(RejectReason::MissingField("event_time_ms")));
    }
}
