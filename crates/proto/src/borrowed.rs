//! Borrowed decoding of `MotorReading` and `MotorReadingBatch`: a reading's ids and extra
//! names are slices of the message, so nothing is allocated per reading (but one list for a
//! reading that has extras).
//!
//! This is a reader of the protobuf wire format for these two messages only. For every message
//! it accepts it reads exactly what prost reads (last value wins for a repeated field,
//! unknown fields skipped, a map entry's absent key or value the default); on anything
//! unusual — a malformed or truncated message, a field of the wrong wire type, a group,
//! an overlong varint, a string that is not UTF-8 — it gives up (`None`), and the caller
//! decodes that message with prost, whose answer (readings or error) is the one that counts.
//! A test compares the two on generated and mutated messages.

use tessera_core::{Channel, Extras, MotorId, ReadingRef, RejectReason, SiteId};

/// A reading as the wire has it, before the identity checks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireReading<'a> {
    /// Field 1 (empty when absent).
    pub motor_id: &'a str,
    /// Field 2 (empty when absent).
    pub site_id: &'a str,
    /// Field 3.
    pub event_time_ms: Option<i64>,
    /// Field 4.
    pub sequence: Option<u64>,
    /// Fields 5 to 11, in [`Channel::ALL`] order.
    pub channels: [Option<f64>; 7],
    /// Field 12's entries in wire order (a name may repeat: the last one counts).
    pub extra: Vec<(&'a str, f64)>,
}

/// One `MotorReading`, or `None` where prost must decide.
pub fn read_reading(message: &[u8]) -> Option<WireReading<'_>> {
    let mut wire = Wire { buf: message };
    let mut r = WireReading::default();
    while !wire.buf.is_empty() {
        let (field, kind) = wire.key()?;
        match (field, kind) {
            (1, LEN) => r.motor_id = wire.string()?,
            (2, LEN) => r.site_id = wire.string()?,
            (3, VARINT) => r.event_time_ms = Some(wire.varint()? as i64),
            (4, VARINT) => r.sequence = Some(wire.varint()?),
            (5..=11, FIXED64) => r.channels[field as usize - 5] = Some(f64::from_bits(wire.fixed64()?)),
            (12, LEN) => r.extra.push(read_extra(wire.bytes()?)?),
            (1..=12, _) => return None,
            _ => wire.skip(kind)?,
        }
    }
    Some(r)
}

/// Every reading of a `MotorReadingBatch`, or `None` where prost must decide.
pub fn read_batch(message: &[u8]) -> Option<Vec<WireReading<'_>>> {
    let mut wire = Wire { buf: message };
    let mut readings = Vec::new();
    while !wire.buf.is_empty() {
        match wire.key()? {
            (1, LEN) => readings.push(read_reading(wire.bytes()?)?),
            (1, _) => return None,
            (_, kind) => wire.skip(kind)?,
        }
    }
    Some(readings)
}

/// One entry of the `extra` map: name (field 1) and value (field 2).
fn read_extra(entry: &[u8]) -> Option<(&str, f64)> {
    let mut wire = Wire { buf: entry };
    let (mut name, mut value) = ("", 0.0);
    while !wire.buf.is_empty() {
        match wire.key()? {
            (1, LEN) => name = wire.string()?,
            (2, FIXED64) => value = f64::from_bits(wire.fixed64()?),
            (1 | 2, _) => return None,
            (_, kind) => wire.skip(kind)?,
        }
    }
    Some((name, value))
}

/// Checks a wire reading's identity fields as [`crate::reading_from_proto`] does (the same
/// errors, in the same order) and sorts its extras by name, the last of a repeated name kept.
pub fn reading_ref_from_wire(w: WireReading<'_>) -> Result<ReadingRef<'_>, RejectReason> {
    MotorId::check(w.motor_id).map_err(RejectReason::BadId)?;
    SiteId::check(w.site_id).map_err(RejectReason::BadId)?;
    let event_time_ms = w.event_time_ms.ok_or(RejectReason::MissingField("event_time_ms"))?;
    let sequence = w.sequence.ok_or(RejectReason::MissingField("sequence"))?;
    let mut extra = w.extra;
    if extra.len() > 1 {
        // Stable: equal names stay in wire order, so the last of each run is the one kept.
        extra.sort_by(|a, b| a.0.cmp(b.0));
        let mut kept: Vec<(&str, f64)> = Vec::with_capacity(extra.len());
        for (name, value) in extra {
            match kept.last_mut() {
                Some(last) if last.0 == name => last.1 = value,
                _ => kept.push((name, value)),
            }
        }
        extra = kept;
    }
    debug_assert_eq!(Channel::ALL.len(), w.channels.len());
    Ok(ReadingRef {
        motor_id: w.motor_id,
        site_id: w.site_id,
        event_time_ms,
        sequence,
        channels: w.channels,
        extra: Extras::List(extra),
    })
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// The unread rest of a message.
struct Wire<'a> {
    buf: &'a [u8],
}

impl<'a> Wire<'a> {
    /// A varint of at most 10 bytes whose value fits 64 bits (prost's rule).
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.buf.split_first()?;
            self.buf = rest;
            if i == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// A field key: its number (at least 1) and wire type.
    #[inline]
    fn key(&mut self) -> Option<(u32, u8)> {
        let key = self.varint()?;
        let key = u32::try_from(key).ok()?;
        let field = key >> 3;
        (field >= 1).then_some((field, (key & 7) as u8))
    }

    #[inline]
    fn fixed64(&mut self) -> Option<u64> {
        let (bytes, rest) = self.buf.split_first_chunk::<8>()?;
        self.buf = rest;
        Some(u64::from_le_bytes(*bytes))
    }

    #[inline]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.buf.len() {
            return None;
        }
        let (bytes, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(bytes)
    }

    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// Skips an unknown field; groups (wire types 3 and 4) are left to prost.
    fn skip(&mut self, kind: u8) -> Option<()> {
        match kind {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed64().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => {
                let (_, rest) = self.buf.split_first_chunk::<4>()?;
                self.buf = rest;
                Some(())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::reading_from_proto;
    use crate::telemetry::{MotorReading, MotorReadingBatch};

    /// What prost makes of a message: readings (checked) or an error.
    /// (Readings compare by fingerprint: every field's bits, so NaN equals NaN and -0 is not 0.)
    fn by_prost(message: &[u8], batch: bool) -> Result<Vec<Result<u64, RejectReason>>, String> {
        let readings = if batch {
            MotorReadingBatch::decode(message).map_err(|e| e.to_string())?.readings
        } else {
            vec![MotorReading::decode(message).map_err(|e| e.to_string())?]
        };
        Ok(readings.into_iter().map(|m| reading_from_proto(m).map(|r| r.fingerprint())).collect())
    }

    /// The same through the borrowed reader, or `None` where it leaves the message to prost.
    fn by_wire(message: &[u8], batch: bool) -> Option<Vec<Result<u64, RejectReason>>> {
        let readings = if batch { read_batch(message)? } else { vec![read_reading(message)?] };
        Some(readings.into_iter().map(|w| reading_ref_from_wire(w).map(|r| r.to_reading().fingerprint())).collect())
    }

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn message(rng: &mut Rng) -> MotorReading {
        let id = |rng: &mut Rng| ["M1", "", "motor 7", "M\u{e9}", "site-a", "x"][rng.below(6) as usize].to_string();
        let value = |rng: &mut Rng| match rng.below(5) {
            0 => None,
            1 => Some(f64::NAN),
            2 => Some(-0.0),
            _ => Some(rng.below(10_000) as f64 / 7.0),
        };
        MotorReading {
            motor_id: id(rng),
            site_id: id(rng),
            event_time_ms: (rng.below(4) > 0).then(|| rng.next() as i64),
            sequence: (rng.below(4) > 0).then(|| rng.next() >> rng.below(64)),
            current_a: value(rng),
            voltage_v: value(rng),
            temperature_c: value(rng),
            vibration_x_rms: value(rng),
            vibration_y_rms: value(rng),
            vibration_z_rms: value(rng),
            speed_rpm: value(rng),
            extra: (0..rng.below(4))
                .map(|i| (["flow", "", "p", "a"][(i + rng.below(2)) as usize].into(), 1.5))
                .collect(),
        }
    }

    /// The borrowed reader and prost agree on every message the reader accepts, and it accepts
    /// every well-formed one.
    #[test]
    fn the_borrowed_reader_reads_what_prost_reads() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut accepted, mut left_to_prost) = (0, 0);
        for round in 0..4000 {
            let batch = round % 2 == 1;
            let mut bytes = if batch {
                MotorReadingBatch { readings: (0..rng.below(4)).map(|_| message(&mut rng)).collect() }.encode_to_vec()
            } else {
                message(&mut rng).encode_to_vec()
            };
            let well_formed = round % 4 < 2;
            if !well_formed {
                // Mutations: flip, cut, append an unknown or repeated field, or garbage.
                match rng.below(5) {
                    0 if !bytes.is_empty() => {
                        let i = rng.below(bytes.len() as u64) as usize;
                        bytes[i] ^= 1 << rng.below(8);
                    }
                    1 => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
                    2 => bytes.extend_from_slice(&[0x98, 0x06, 0x2a, 0x8d, 0x01, 1, 2, 3, 4]), // fields 99, 17
                    3 => bytes.extend_from_slice(&[0x0a, 0x02, b'M', b'9', 0x18, 0x05]), // motor_id and time again
                    _ => bytes.extend((0..rng.below(12)).map(|_| rng.next() as u8)),
                }
            }
            let truth = by_prost(&bytes, batch);
            match by_wire(&bytes, batch) {
                Some(ours) => {
                    accepted += 1;
                    assert_eq!(Ok(ours), truth, "round {round}: {bytes:02x?}");
                }
                None => {
                    left_to_prost += 1;
                    assert!(!well_formed, "round {round}: a well-formed message was left to prost: {bytes:02x?}");
                }
            }
        }
        assert!(accepted > 2000 && left_to_prost > 100, "{accepted} accepted, {left_to_prost} left to prost");
    }

    #[test]
    fn repeated_extra_names_keep_the_last_and_sort() {
        // Two entries named "b", then "a": the map keeps b = 2.0 and a = 3.0, sorted.
        let entry = |name: &str, v: f64| {
            let mut e = vec![0x0a, name.len() as u8];
            e.extend_from_slice(name.as_bytes());
            e.push(0x11);
            e.extend_from_slice(&v.to_le_bytes());
            let mut field = vec![0x62, e.len() as u8];
            field.extend(e);
            field
        };
        let mut bytes = MotorReading {
            motor_id: "M1".into(),
            site_id: "s".into(),
            event_time_ms: Some(1),
            sequence: Some(2),
            ..Default::default()
        }
        .encode_to_vec();
        bytes.extend(entry("b", 1.0));
        bytes.extend(entry("b", 2.0));
        bytes.extend(entry("a", 3.0));
        let r = reading_ref_from_wire(read_reading(&bytes).unwrap()).unwrap();
        assert_eq!(r.extra.iter().collect::<Vec<_>>(), [("a", 3.0), ("b", 2.0)]);
        assert_eq!(Ok(r.to_reading()), reading_from_proto(MotorReading::decode(bytes.as_slice()).unwrap()));
    }
}
