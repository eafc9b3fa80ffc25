//! Which shard a motor belongs to.
//!
//! The hash is part of Tessera's contract (state and checkpoints are laid out by it), so it is
//! fixed: **XXH3-64 (seed 0) of the motor id's UTF-8 bytes, modulo the shard count**. XXH3 is
//! specified byte-for-byte and gives the same value on every platform and version of the
//! `xxhash-rust` crate.

use crate::MotorId;

/// The shard, in `0..shard_count`, of a motor. `shard_count` must be at least 1.
pub fn shard_of(motor_id: &MotorId, shard_count: u32) -> u32 {
    shard_of_id(motor_id.as_str(), shard_count)
}

/// [`shard_of`] for an id already checked (a borrowed reading's, [`crate::ReadingRef`]).
pub fn shard_of_id(motor_id: &str, shard_count: u32) -> u32 {
    assert!(shard_count > 0, "shard_count must be at least 1");
    (xxhash_rust::xxh3::xxh3_64(motor_id.as_bytes()) % u64::from(shard_count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_stable_and_spread() {
        // Pinned values: changing the hash would move every motor's state.
        let m = MotorId::new("M0001").unwrap();
        assert_eq!(shard_of(&m, 1), 0);
        assert_eq!(shard_of(&m, 1024), 24);
        assert_eq!(shard_of(&MotorId::new("M0001").unwrap(), 8), 0);

        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_of(&MotorId::new(format!("M{i:05}")).unwrap(), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
