//! Repeated readings: the same reading (motor, sequence number, event time) arriving in a
//! second message, whether an attacker re-published (replayed) captured messages or a producer
//! retried without idempotence. (Not to be confused with the CSV replay tool, which publishes
//! recorded data.)
//!
//! Per motor, the [`RepeatGuard`] remembers the last [`WINDOW`] sequence numbers taken, each with its
//! event time. A reading whose sequence number is in that window with the same event time is a
//! repeat: it is dead-lettered with reason `replayed_reading` (its original bytes kept), not
//! taken twice. A device that restarts its numbering sends new event times, so its readings
//! are not mistaken for repeats. A sequence number older than the window cannot be judged here;
//! such a reading follows the late path like any old reading.
//!
//! The guard lives with the partition's assignment: Kafka redelivering the same offset is
//! handled before it (offsets per partition), and when a partition is revoked its motors are
//! forgotten, so that the next owner, or this node later, reads the partition again from its
//! checkpoint without the re-read being taken for repeats.

use std::collections::HashMap;

use tessera_core::{ReadingRef, RejectReason};

/// Sequence numbers remembered per motor (50 s at 10 Hz; 8 KiB per motor).
pub const WINDOW: usize = 512;

#[derive(Default)]
struct MotorWindow {
    newest: u64,
    /// `(sequence, event time)` by `sequence % WINDOW`.
    slots: Vec<Option<(u64, i64)>>,
}

/// Remembers recent readings per motor and refuses repeats.
#[derive(Default)]
pub struct RepeatGuard {
    motors: HashMap<String, MotorWindow>,
}

impl RepeatGuard {
    /// Checks `reading` and, if it is new, remembers it.
    pub fn check(&mut self, reading: &ReadingRef<'_>) -> Result<(), RejectReason> {
        // Looked up by the borrowed id: only a motor new here allocates its key.
        if !self.motors.contains_key(reading.motor_id) {
            self.motors.insert(reading.motor_id.to_string(), MotorWindow { newest: 0, slots: vec![None; WINDOW] });
        }
        let window = self.motors.get_mut(reading.motor_id).expect("inserted above");
        let seq = reading.sequence;
        let slot = &mut window.slots[(seq % WINDOW as u64) as usize];
        if *slot == Some((seq, reading.event_time_ms)) {
            return Err(RejectReason::Replayed { sequence: seq });
        }
        // Too old for the window: remembering it would evict a newer reading's slot.
        if seq.saturating_add(WINDOW as u64) <= window.newest {
            return Ok(());
        }
        *slot = Some((seq, reading.event_time_ms));
        window.newest = window.newest.max(seq);
        Ok(())
    }

    /// Forgets `motor` (its partition was revoked).
    pub fn forget(&mut self, motor: &str) {
        self.motors.remove(motor);
    }
}

#[cfg(test)]
mod tests {
    use tessera_core::{MotorId, Reading, SiteId};

    use super::*;

    fn reading(motor: &str, sequence: u64, ts: i64) -> Reading {
        Reading {
            motor_id: MotorId::new(motor).unwrap(),
            site_id: SiteId::new("s").unwrap(),
            event_time_ms: ts,
            sequence,
            channels: [None; 7],
            extra: Default::default(),
        }
    }

    #[test]
    fn a_repeat_is_refused_a_restart_or_another_motor_is_not() {
        let mut guard = RepeatGuard::default();
        for s in 0..100 {
            guard.check(&reading("m1", s, 1000 + s as i64).view()).unwrap();
        }
        assert_eq!(guard.check(&reading("m1", 42, 1042).view()), Err(RejectReason::Replayed { sequence: 42 }));
        guard.check(&reading("m2", 42, 1042).view()).expect("another motor");
        guard.check(&reading("m1", 42, 90_000).view()).expect("numbering restarted: a new event time");
        guard.forget("m1");
        guard.check(&reading("m1", 43, 1043).view()).expect("forgotten with its partition");
    }

    #[test]
    fn sequence_numbers_older_than_the_window_pass_and_evict_nothing() {
        let mut guard = RepeatGuard::default();
        let newest = 10 * WINDOW as u64;
        guard.check(&reading("m", newest, 5).view()).unwrap();
        guard.check(&reading("m", newest - WINDOW as u64, 1).view()).expect("too old to judge");
        assert!(guard.check(&reading("m", newest, 5).view()).is_err(), "the newest reading's slot is intact");
    }
}
