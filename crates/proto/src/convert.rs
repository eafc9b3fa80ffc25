//! Conversions between the protobuf telemetry messages and [`tessera_core::Reading`].

use tessera_core::{Channel, MotorId, Reading, RejectReason, SiteId};

use crate::telemetry::MotorReading;

/// Builds a core reading from its protobuf form, checking the identity fields. Value checks
/// (ranges, NaN, event-time bounds) are [`tessera_core::ValidationRules::check`]'s job.
pub fn reading_from_proto(m: MotorReading) -> Result<Reading, RejectReason> {
    let motor_id = MotorId::new(m.motor_id).map_err(RejectReason::BadId)?;
    let site_id = SiteId::new(m.site_id).map_err(RejectReason::BadId)?;
    let event_time_ms = m.event_time_ms.ok_or(RejectReason::MissingField("event_time_ms"))?;
    let sequence = m.sequence.ok_or(RejectReason::MissingField("sequence"))?;
    Ok(Reading {
        motor_id,
        site_id,
        event_time_ms,
        sequence,
        channels: [
            m.current_a,
            m.voltage_v,
            m.temperature_c,
            m.vibration_x_rms,
            m.vibration_y_rms,
            m.vibration_z_rms,
            m.speed_rpm,
        ],
        extra: m.extra.into_iter().collect(),
    })
}

impl From<&Reading> for MotorReading {
    fn from(r: &Reading) -> Self {
        MotorReading {
            motor_id: r.motor_id.to_string(),
            site_id: r.site_id.to_string(),
            event_time_ms: Some(r.event_time_ms),
            sequence: Some(r.sequence),
            current_a: r.get(Channel::CurrentA),
            voltage_v: r.get(Channel::VoltageV),
            temperature_c: r.get(Channel::TemperatureC),
            vibration_x_rms: r.get(Channel::VibrationXRms),
            vibration_y_rms: r.get(Channel::VibrationYRms),
            vibration_z_rms: r.get(Channel::VibrationZRms),
            speed_rpm: r.get(Channel::SpeedRpm),
            extra: r.extra.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    use super::*;

    #[test]
    fn round_trips_through_bytes() {
        let reading = Reading {
            motor_id: MotorId::new("M7").unwrap(),
            site_id: SiteId::new("site-b").unwrap(),
            event_time_ms: 1_700_000_000_123,
            sequence: 42,
            channels: [Some(12.5), Some(401.0), None, Some(2.1), Some(1.9), None, Some(1475.0)],
            extra: BTreeMap::from([("pressure_bar".into(), 3.25)]),
        };
        let bytes = MotorReading::from(&reading).encode_to_vec();
        let back = reading_from_proto(MotorReading::decode(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(back, reading);
    }

    #[test]
    fn missing_identity_fields_are_named() {
        let m = MotorReading { motor_id: "M1".into(), site_id: "s".into(), ..Default::default() };
        assert_eq!(reading_from_proto(m), Err(RejectReason::MissingField("event_time_ms")));
        let m = MotorReading { site_id: "s".into(), ..Default::default() };
        assert_eq!(reading_from_proto(m).unwrap_err().code(), "bad_id");
    }
}
