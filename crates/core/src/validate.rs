//! Validation rules for readings: what the ingest accepts, and why it rejects the rest.
//!
//! A rejected reading is never dropped: the ingest sends its message to the dead-letter topic
//! with the [`RejectReason`] (its stable [`code`](RejectReason::code) and its text) in headers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Channel, ConfigError, IdError, Reading, ReadingRef, ensure};

/// An inclusive range of plausible physical values for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysicalRange {
    /// Smallest plausible value.
    pub min: f64,
    /// Largest plausible value.
    pub max: f64,
}

impl PhysicalRange {
    const fn new(min: f64, max: f64) -> Self {
        Self { min, max }
    }
}

/// What the ingest accepts. The defaults fit low-voltage industrial motors; configure the
/// ranges for your fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationRules {
    /// Plausible range of `current_a` (A).
    pub current_a: PhysicalRange,
    /// Plausible range of `voltage_v` (V).
    pub voltage_v: PhysicalRange,
    /// Plausible range of `temperature_c` (°C).
    pub temperature_c: PhysicalRange,
    /// Plausible range of each `vibration_*_rms` axis.
    pub vibration_rms: PhysicalRange,
    /// Plausible range of `speed_rpm` (negative: reverse rotation).
    pub speed_rpm: PhysicalRange,
    /// How far ahead of the ingest's clock an event time may be, in milliseconds (config key
    /// `max_future`, a duration such as `"5m"`; `max_future_ms` is read too, deprecated).
    #[serde(rename = "max_future", with = "crate::duration_millis")]
    pub max_future_ms: i64,
    /// How far behind the ingest's clock an event time may be, in milliseconds (config key
    /// `max_past`, e.g. `"30days"`; `max_past_ms` is read too, deprecated).
    #[serde(rename = "max_past", with = "crate::duration_millis")]
    pub max_past_ms: i64,
    /// Most extra named measurements in one reading.
    pub max_extra_fields: usize,
    /// Longest name of an extra measurement, in bytes.
    pub max_extra_name_bytes: usize,
}

impl Default for ValidationRules {
    fn default() -> Self {
        Self {
            current_a: PhysicalRange::new(-5_000.0, 5_000.0),
            voltage_v: PhysicalRange::new(0.0, 15_000.0),
            temperature_c: PhysicalRange::new(-60.0, 400.0),
            vibration_rms: PhysicalRange::new(0.0, 1_000.0),
            speed_rpm: PhysicalRange::new(-100_000.0, 100_000.0),
            max_future_ms: 5 * 60 * 1000,
            max_past_ms: 30 * 24 * 3600 * 1000,
            max_extra_fields: 64,
            max_extra_name_bytes: 64,
        }
    }
}

/// Why a reading or a message was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum RejectReason {
    /// The bytes are not a message of the declared encoding.
    Malformed(String),
    /// The message is larger than the configured limit.
    Oversize {
        /// Its size in bytes.
        bytes: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A batch message holds more readings than the configured limit.
    TooManyReadings {
        /// Readings in the message.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A required field is absent.
    MissingField(&'static str),
    /// The motor or site id is unusable.
    BadId(IdError),
    /// A value is NaN or infinite.
    NotFinite {
        /// The field's name.
        field: String,
    },
    /// A value is outside its plausible physical range.
    OutOfRange {
        /// The field's name.
        field: String,
        /// The value.
        value: f64,
        /// The accepted range.
        range: PhysicalRange,
    },
    /// The event time is too far ahead of the ingest's clock.
    FutureEventTime {
        /// How far ahead, in milliseconds.
        ahead_ms: i64,
    },
    /// The event time is too far behind the ingest's clock.
    StaleEventTime {
        /// How far behind, in milliseconds.
        behind_ms: i64,
    },
    /// Too many, or too long, extra measurement names.
    BadExtra(String),
    /// Processing the message failed inside Tessera (a bug it triggers): isolated to the
    /// dead-letter topic so the partition moves on instead of crash-looping.
    Poison(String),
    /// The same reading (motor, sequence number and event time) was already taken from another
    /// message: a replayed or duplicated message.
    Replayed {
        /// The reading's sequence number.
        sequence: u64,
    },
}

impl RejectReason {
    /// A short, stable, machine-readable code (the `tessera.dlq.reason` header; metrics label).
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Malformed(_) => "malformed",
            RejectReason::Oversize { .. } => "oversize",
            RejectReason::TooManyReadings { .. } => "too_many_readings",
            RejectReason::MissingField(_) => "missing_field",
            RejectReason::BadId(_) => "bad_id",
            RejectReason::NotFinite { .. } => "not_finite",
            RejectReason::OutOfRange { .. } => "out_of_range",
            RejectReason::FutureEventTime { .. } => "future_event_time",
            RejectReason::StaleEventTime { .. } => "stale_event_time",
            RejectReason::BadExtra(_) => "bad_extra",
            RejectReason::Poison(_) => "poison",
            RejectReason::Replayed { .. } => "replayed_reading",
        }
    }

    /// Every code [`code`](Self::code) can return, for metrics and docs.
    pub const CODES: [&'static str; 12] = [
        "malformed",
        "oversize",
        "too_many_readings",
        "missing_field",
        "bad_id",
        "not_finite",
        "out_of_range",
        "future_event_time",
        "stale_event_time",
        "bad_extra",
        "poison",
        "replayed_reading",
    ];
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Malformed(why) => write!(f, "malformed message: {why}"),
            RejectReason::Oversize { bytes, limit } => {
                write!(f, "message is {bytes} bytes, the limit is {limit}")
            }
            RejectReason::TooManyReadings { count, limit } => {
                write!(f, "batch holds {count} readings, the limit is {limit}")
            }
            RejectReason::MissingField(name) => write!(f, "required field {name} is missing"),
            RejectReason::BadId(e) => write!(f, "{e}"),
            RejectReason::NotFinite { field } => write!(f, "{field} is NaN or infinite"),
            RejectReason::OutOfRange { field, value, range } => {
                write!(f, "{field} = {value} is outside [{}, {}]", range.min, range.max)
            }
            RejectReason::FutureEventTime { ahead_ms } => {
                write!(f, "event time is {ahead_ms} ms in the future")
            }
            RejectReason::StaleEventTime { behind_ms } => {
                write!(f, "event time is {behind_ms} ms in the past")
            }
            RejectReason::BadExtra(why) => write!(f, "extra measurements: {why}"),
            RejectReason::Poison(why) => write!(f, "processing the message failed: {why}"),
            RejectReason::Replayed { sequence } => {
                write!(
                    f,
                    "reading {sequence} of this motor, with this event time, was already taken (replayed or duplicated)"
                )
            }
        }
    }
}

impl ValidationRules {
    fn range_of(&self, channel: Channel) -> PhysicalRange {
        match channel {
            Channel::CurrentA => self.current_a,
            Channel::VoltageV => self.voltage_v,
            Channel::TemperatureC => self.temperature_c,
            Channel::VibrationXRms | Channel::VibrationYRms | Channel::VibrationZRms => self.vibration_rms,
            Channel::SpeedRpm => self.speed_rpm,
        }
    }

    /// Checks a decoded reading against the rules, with `now_ms` as the ingest's clock.
    /// Identity fields were checked when the reading was built (see [`crate::MotorId::new`]).
    pub fn check(&self, reading: &Reading, now_ms: i64) -> Result<(), RejectReason> {
        self.check_ref(&reading.view(), now_ms)
    }

    /// [`Self::check`] of a borrowed reading.
    pub fn check_ref(&self, reading: &ReadingRef<'_>, now_ms: i64) -> Result<(), RejectReason> {
        let ahead = reading.event_time_ms.saturating_sub(now_ms);
        if ahead > self.max_future_ms {
            return Err(RejectReason::FutureEventTime { ahead_ms: ahead });
        }
        let behind = now_ms.saturating_sub(reading.event_time_ms);
        if behind > self.max_past_ms {
            return Err(RejectReason::StaleEventTime { behind_ms: behind });
        }
        for channel in Channel::ALL {
            let Some(value) = reading.channels[channel as usize] else { continue };
            if !value.is_finite() {
                return Err(RejectReason::NotFinite { field: channel.name().to_string() });
            }
            let range = self.range_of(channel);
            if value < range.min || value > range.max {
                return Err(RejectReason::OutOfRange { field: channel.name().to_string(), value, range });
            }
        }
        if reading.extra.len() > self.max_extra_fields {
            return Err(RejectReason::BadExtra(format!(
                "{} fields, the limit is {}",
                reading.extra.len(),
                self.max_extra_fields
            )));
        }
        for (name, value) in reading.extra.iter() {
            if name.is_empty() || name.len() > self.max_extra_name_bytes {
                return Err(RejectReason::BadExtra(format!(
                    "name of {} bytes, allowed 1 to {}",
                    name.len(),
                    self.max_extra_name_bytes
                )));
            }
            if !value.is_finite() {
                return Err(RejectReason::NotFinite { field: format!("extra.{name}") });
            }
        }
        if reading.channels.iter().all(Option::is_none) && reading.extra.is_empty() {
            return Err(RejectReason::MissingField("any measurement"));
        }
        Ok(())
    }

    /// Checks that the rules themselves make sense; the error names the field, relative to
    /// the rules' own section (`max_past`; the ingest config puts `validation.` in front).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ranges = [
            ("current_a", self.current_a),
            ("voltage_v", self.voltage_v),
            ("temperature_c", self.temperature_c),
            ("vibration_rms", self.vibration_rms),
            ("speed_rpm", self.speed_rpm),
        ];
        for (name, r) in ranges {
            if !(r.min.is_finite() && r.max.is_finite() && r.min <= r.max) {
                return Err(ConfigError::new(name, format!("min ({}) must be finite and ≤ max ({})", r.min, r.max)));
            }
        }
        ensure(self.max_future_ms >= 0, "max_future", "must not be negative")?;
        ensure(self.max_past_ms >= 0, "max_past", "must not be negative")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{MotorId, SiteId};

    const NOW: i64 = 1_800_000_000_000;

    fn ok_reading() -> Reading {
        Reading {
            motor_id: MotorId::new("M1").unwrap(),
            site_id: SiteId::new("s").unwrap(),
            event_time_ms: NOW,
            sequence: 0,
            channels: [Some(10.0), Some(400.0), Some(60.0), Some(2.0), None, None, Some(1480.0)],
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn accepts_a_normal_reading() {
        assert_eq!(ValidationRules::default().check(&ok_reading(), NOW), Ok(()));
    }

    #[test]
    fn rejects_each_kind_of_bad_value() {
        let rules = ValidationRules::default();
        let mut r = ok_reading();
        r.set(Channel::TemperatureC, Some(f64::NAN));
        assert_eq!(rules.check(&r, NOW).unwrap_err().code(), "not_finite");

        let mut r = ok_reading();
        r.set(Channel::SpeedRpm, Some(f64::INFINITY));
        assert_eq!(rules.check(&r, NOW).unwrap_err().code(), "not_finite");

        let mut r = ok_reading();
        r.set(Channel::VoltageV, Some(-1.0));
        let err = rules.check(&r, NOW).unwrap_err();
        assert_eq!(err.code(), "out_of_range");
        assert_eq!(err.to_string(), "voltage_v = -1 is outside [0, 15000]");

        let mut r = ok_reading();
        r.event_time_ms = NOW + 3_600_000;
        assert_eq!(rules.check(&r, NOW), Err(RejectReason::FutureEventTime { ahead_ms: 3_600_000 }));

        let mut r = ok_reading();
        r.event_time_ms = -5;
        assert_eq!(rules.check(&r, NOW).unwrap_err().code(), "stale_event_time");

        let mut r = ok_reading();
        r.channels = [None; 7];
        assert_eq!(rules.check(&r, NOW), Err(RejectReason::MissingField("any measurement")));

        let mut r = ok_reading();
        r.extra.insert("p".into(), f64::NEG_INFINITY);
        assert_eq!(rules.check(&r, NOW).unwrap_err().to_string(), "extra.p is NaN or infinite");
    }

    #[test]
    fn every_code_is_listed() {
        let reasons = [
            RejectReason::Malformed(String::new()),
            RejectReason::Oversize { bytes: 0, limit: 0 },
            RejectReason::TooManyReadings { count: 0, limit: 0 },
            RejectReason::MissingField(""),
            RejectReason::BadId(IdError::Empty { kind: "" }),
            RejectReason::NotFinite { field: String::new() },
            RejectReason::OutOfRange { field: String::new(), value: 0.0, range: PhysicalRange::new(0.0, 0.0) },
            RejectReason::FutureEventTime { ahead_ms: 0 },
            RejectReason::StaleEventTime { behind_ms: 0 },
            RejectReason::BadExtra(String::new()),
            RejectReason::Poison(String::new()),
            RejectReason::Replayed { sequence: 0 },
        ];
        let codes: Vec<_> = reasons.iter().map(RejectReason::code).collect();
        assert_eq!(codes, RejectReason::CODES);
    }

    #[test]
    fn rule_validation_names_the_field() {
        let rules = ValidationRules { voltage_v: PhysicalRange::new(10.0, 1.0), ..Default::default() };
        let err = rules.validate().unwrap_err();
        assert_eq!(err.field, "voltage_v");
        assert!(err.to_string().starts_with("voltage_v:"));
    }
}
