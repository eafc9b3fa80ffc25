//! One telemetry reading of one motor, as every decoder produces it.

use std::collections::BTreeMap;

use crate::{MotorId, SiteId};

/// The measured channels every motor may report. Each one is optional in a reading: a motor
/// without a speed sensor, or a sensor that dropped out, leaves it empty (null in Arrow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Phase current, amperes.
    CurrentA,
    /// Supply voltage, volts.
    VoltageV,
    /// Motor body (winding/housing) temperature, degrees Celsius.
    TemperatureC,
    /// RMS vibration on the X (radial, horizontal) axis.
    VibrationXRms,
    /// RMS vibration on the Y (radial, vertical) axis.
    VibrationYRms,
    /// RMS vibration on the Z (axial) axis.
    VibrationZRms,
    /// Shaft speed, revolutions per minute.
    SpeedRpm,
}

impl Channel {
    /// Every channel, in schema order.
    pub const ALL: [Channel; 7] = [
        Channel::CurrentA,
        Channel::VoltageV,
        Channel::TemperatureC,
        Channel::VibrationXRms,
        Channel::VibrationYRms,
        Channel::VibrationZRms,
        Channel::SpeedRpm,
    ];

    /// The field name used in protobuf, JSON and the Arrow schema.
    pub const fn name(self) -> &'static str {
        match self {
            Channel::CurrentA => "current_a",
            Channel::VoltageV => "voltage_v",
            Channel::TemperatureC => "temperature_c",
            Channel::VibrationXRms => "vibration_x_rms",
            Channel::VibrationYRms => "vibration_y_rms",
            Channel::VibrationZRms => "vibration_z_rms",
            Channel::SpeedRpm => "speed_rpm",
        }
    }
}

/// One reading: who sent it, when it was measured, its per-motor sequence number and the
/// measured values.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The motor that was measured.
    pub motor_id: MotorId,
    /// The site (plant) the motor belongs to.
    pub site_id: SiteId,
    /// When the values were measured, milliseconds since the Unix epoch (UTC).
    pub event_time_ms: i64,
    /// Per-motor sequence number, increasing by one per reading; used to find gaps and
    /// duplicates.
    pub sequence: u64,
    /// The standard channels, indexed like [`Channel::ALL`].
    pub channels: [Option<f64>; 7],
    /// Further named measurements (e.g. `pressure_bar`), sorted by name.
    pub extra: BTreeMap<String, f64>,
}

impl Reading {
    /// The value of one standard channel.
    pub fn get(&self, channel: Channel) -> Option<f64> {
        self.channels[channel as usize]
    }

    /// Sets one standard channel.
    pub fn set(&mut self, channel: Channel, value: Option<f64>) {
        self.channels[channel as usize] = value;
    }

    /// A 64-bit fingerprint of everything in the reading. Summing fingerprints with wrapping
    /// addition gives an order-independent checksum of a set of readings, which is how tests
    /// prove that what came out of the pipeline is exactly what went in.
    pub fn fingerprint(&self) -> u64 {
        let mut h =
            ReadingFingerprint::new(self.motor_id.as_str(), self.site_id.as_str(), self.event_time_ms, self.sequence);
        for value in self.channels {
            h.channel(value);
        }
        for (name, value) in &self.extra {
            h.extra(name, *value);
        }
        h.finish()
    }
}

/// A reading borrowed from the message it was decoded from: the ingest's hot path checks and
/// appends it to the Arrow builders without allocating its ids (see [`Reading::view`] for an
/// owned reading seen this way). Ids were checked when it was built.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRef<'a> {
    /// The motor that was measured.
    pub motor_id: &'a str,
    /// The site the motor belongs to.
    pub site_id: &'a str,
    /// When the values were measured, milliseconds since the Unix epoch (UTC).
    pub event_time_ms: i64,
    /// Per-motor sequence number.
    pub sequence: u64,
    /// The standard channels, indexed like [`Channel::ALL`].
    pub channels: [Option<f64>; 7],
    /// Further named measurements, sorted by name, each name once.
    pub extra: Extras<'a>,
}

/// A borrowed reading's extra measurements, sorted by name, each name once.
#[derive(Debug, Clone, PartialEq)]
pub enum Extras<'a> {
    /// An owned reading's map.
    Map(&'a BTreeMap<String, f64>),
    /// Names borrowed from a message (empty for most readings: no allocation then).
    List(Vec<(&'a str, f64)>),
}

impl Extras<'_> {
    /// How many there are.
    pub fn len(&self) -> usize {
        match self {
            Extras::Map(m) => m.len(),
            Extras::List(l) => l.len(),
        }
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Name and value, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        let (map, list) = match self {
            Extras::Map(m) => (Some(m.iter().map(|(k, v)| (k.as_str(), *v))), None),
            Extras::List(l) => (None, Some(l.iter().map(|(k, v)| (*k, *v)))),
        };
        map.into_iter().flatten().chain(list.into_iter().flatten())
    }
}

impl Reading {
    /// The reading seen as a [`ReadingRef`] (no copy).
    pub fn view(&self) -> ReadingRef<'_> {
        ReadingRef {
            motor_id: self.motor_id.as_str(),
            site_id: self.site_id.as_str(),
            event_time_ms: self.event_time_ms,
            sequence: self.sequence,
            channels: self.channels,
            extra: Extras::Map(&self.extra),
        }
    }
}

impl ReadingRef<'_> {
    /// An owned copy.
    pub fn to_reading(&self) -> Reading {
        Reading {
            motor_id: MotorId::new(self.motor_id).expect("a borrowed reading's ids were checked"),
            site_id: SiteId::new(self.site_id).expect("a borrowed reading's ids were checked"),
            event_time_ms: self.event_time_ms,
            sequence: self.sequence,
            channels: self.channels,
            extra: self.extra.iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }
}

/// Incremental form of [`Reading::fingerprint`], so that a reading stored column-wise (an
/// Arrow row) hashes to the same value without being rebuilt as a [`Reading`]. Feed the
/// channels in [`Channel::ALL`] order, then the extras sorted by name.
#[derive(Debug)]
pub struct ReadingFingerprint {
    bytes: Vec<u8>,
}

impl ReadingFingerprint {
    /// Starts a fingerprint with the identity fields.
    pub fn new(motor_id: &str, site_id: &str, event_time_ms: i64, sequence: u64) -> Self {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(motor_id.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(site_id.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(&event_time_ms.to_le_bytes());
        bytes.extend_from_slice(&sequence.to_le_bytes());
        Self { bytes }
    }

    /// Adds one standard channel (absent and present values hash differently).
    pub fn channel(&mut self, value: Option<f64>) {
        match value {
            None => self.bytes.push(0),
            Some(v) => {
                self.bytes.push(1);
                self.bytes.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
    }

    /// Adds one extra measurement.
    pub fn extra(&mut self, name: &str, value: f64) {
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0xff);
        self.bytes.extend_from_slice(&value.to_bits().to_le_bytes());
    }

    /// The fingerprint.
    pub fn finish(self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        Reading {
            motor_id: MotorId::new("M1").unwrap(),
            site_id: SiteId::new("s").unwrap(),
            event_time_ms: 1_700_000_000_000,
            sequence: 7,
            channels: [Some(1.0), None, Some(3.0), None, None, None, Some(1480.0)],
            extra: BTreeMap::from([("pressure_bar".to_string(), 2.5)]),
        }
    }

    #[test]
    fn fingerprint_sees_every_field() {
        let base = reading().fingerprint();
        let mut r = reading();
        r.sequence = 8;
        assert_ne!(r.fingerprint(), base);
        let mut r = reading();
        r.set(Channel::VoltageV, Some(0.0));
        assert_ne!(r.fingerprint(), base, "absent and 0.0 differ");
        let mut r = reading();
        r.extra.insert("flow".into(), 1.0);
        assert_ne!(r.fingerprint(), base);
        assert_eq!(reading().fingerprint(), base);
    }
}
