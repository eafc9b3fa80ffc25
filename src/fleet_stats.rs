//! Per-motor statistics over the batches the ingest hands on: what tests use to prove that
//! every reading arrived exactly once (or count the duplicates).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use tessera_core::{Channel, TelemetryColumn};
use tessera_ingest::row_fingerprints;

/// Which sequence numbers of one motor were seen, in O(1) memory while they arrive in order.
#[derive(Debug, Default, Clone)]
struct SeenSequences {
    /// Every sequence below this was seen.
    below: u64,
    /// Seen sequences at or above `below`.
    ahead: BTreeSet<u64>,
}

impl SeenSequences {
    /// Records a sequence number; false if it was seen before.
    fn insert(&mut self, seq: u64) -> bool {
        if seq < self.below || !self.ahead.insert(seq) {
            return false;
        }
        while self.ahead.remove(&self.below) {
            self.below += 1;
        }
        true
    }

    fn unique(&self) -> u64 {
        self.below + self.ahead.len() as u64
    }

    fn highest(&self) -> Option<u64> {
        self.ahead.last().copied().or(self.below.checked_sub(1))
    }
}

/// What one motor sent.
#[derive(Debug, Default, Clone)]
pub struct MotorStats {
    /// Its site.
    pub site_id: String,
    /// Rows received, duplicates included.
    pub rows: u64,
    /// Rows whose sequence number had been seen before.
    pub duplicates: u64,
    /// Batches that held rows of this motor.
    pub batches: u64,
    /// Earliest and latest event time seen, ms.
    pub first_ts: i64,
    /// Latest event time seen, ms.
    pub last_ts: i64,
    current_sum: f64,
    current_n: u64,
    /// Highest temperature seen, °C.
    pub max_temperature_c: f64,
    /// Highest X-axis vibration seen.
    pub max_vibration_x: f64,
    seen: SeenSequences,
    /// Number (1-based) of the last batch that held this motor's rows.
    last_batch: u64,
}

impl MotorStats {
    /// Mean current over the rows that had one.
    pub fn mean_current_a(&self) -> f64 {
        if self.current_n == 0 { f64::NAN } else { self.current_sum / self.current_n as f64 }
    }

    /// Sequence numbers missing below the highest seen one (a gap: lost or not yet arrived).
    pub fn missing(&self) -> u64 {
        self.seen.highest().map_or(0, |h| h + 1 - self.seen.unique())
    }
}

/// Fleet-wide totals and per-motor statistics.
#[derive(Debug, Default, Clone)]
pub struct FleetStats {
    /// Per motor, by id.
    pub motors: BTreeMap<String, MotorStats>,
    /// Rows per shard.
    pub shard_rows: BTreeMap<u32, u64>,
    /// Batches received.
    pub batches: u64,
    /// Rows received, duplicates included.
    pub rows: u64,
    /// Rows whose (motor, sequence) had been seen before.
    pub duplicates: u64,
    /// Wrapping sum of the fingerprints of the first copy of every reading: equal to the
    /// producer's checksum when nothing was lost or altered, whatever the duplicates.
    pub unique_checksum: u64,
}

impl FleetStats {
    /// Adds one shard batch.
    pub fn add_batch(&mut self, shard: u32, batch: &RecordBatch) {
        self.batches += 1;
        self.rows += batch.num_rows() as u64;
        *self.shard_rows.entry(shard).or_default() += batch.num_rows() as u64;
        let col = |c: TelemetryColumn| batch.column(c as usize);
        let motor = col(TelemetryColumn::MotorId).as_string::<i32>();
        let site = col(TelemetryColumn::SiteId).as_string::<i32>();
        let ts = col(TelemetryColumn::Ts).as_primitive::<TimestampMillisecondType>();
        let seq = col(TelemetryColumn::Seq).as_primitive::<UInt64Type>();
        let channel = |c: Channel| {
            batch.column(TelemetryColumn::FirstChannel as usize + c as usize).as_primitive::<Float64Type>()
        };
        let (current, temperature, vibration) =
            (channel(Channel::CurrentA), channel(Channel::TemperatureC), channel(Channel::VibrationXRms));
        let fingerprints = row_fingerprints(batch);
        for (row, fingerprint) in fingerprints.iter().enumerate() {
            let id = motor.value(row);
            let m = self.motors.entry(id.to_string()).or_insert_with(|| MotorStats {
                site_id: site.value(row).to_string(),
                first_ts: i64::MAX,
                last_ts: i64::MIN,
                max_temperature_c: f64::NEG_INFINITY,
                max_vibration_x: f64::NEG_INFINITY,
                ..Default::default()
            });
            if m.last_batch != self.batches {
                m.batches += 1;
                m.last_batch = self.batches;
            }
            m.rows += 1;
            if m.seen.insert(seq.value(row)) {
                self.unique_checksum = self.unique_checksum.wrapping_add(*fingerprint);
            } else {
                m.duplicates += 1;
                self.duplicates += 1;
            }
            m.first_ts = m.first_ts.min(ts.value(row));
            m.last_ts = m.last_ts.max(ts.value(row));
            if current.is_valid(row) {
                m.current_sum += current.value(row);
                m.current_n += 1;
            }
            if temperature.is_valid(row) {
                m.max_temperature_c = m.max_temperature_c.max(temperature.value(row));
            }
            if vibration.is_valid(row) {
                m.max_vibration_x = m.max_vibration_x.max(vibration.value(row));
            }
        }
    }

    /// Distinct readings received.
    pub fn unique_rows(&self) -> u64 {
        self.rows - self.duplicates
    }

    /// A table of the first `limit` motors (by id) and the per-shard row counts.
    pub fn table(&self, limit: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:>8} {:>7} {:>5} {:>5} {:>10} {:>10} {:>9} {:>9}",
            "motor", "site", "readings", "batches", "dup", "gaps", "span_s", "mean_I_A", "max_T_C", "max_vibX"
        );
        for (id, m) in self.motors.iter().take(limit) {
            let _ = writeln!(
                out,
                "{:<8} {:<8} {:>8} {:>7} {:>5} {:>5} {:>10.1} {:>10.2} {:>9.1} {:>9.2}",
                id,
                m.site_id,
                m.rows,
                m.batches,
                m.duplicates,
                m.missing(),
                (m.last_ts - m.first_ts) as f64 / 1000.0,
                m.mean_current_a(),
                m.max_temperature_c,
                m.max_vibration_x
            );
        }
        if self.motors.len() > limit {
            let _ = writeln!(out, "... and {} more motors", self.motors.len() - limit);
        }
        let shards: Vec<String> = self.shard_rows.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        let _ = writeln!(out, "rows per shard: {}", shards.join("  "));
        out
    }
}

/// Runs a sink thread that adds every batch from `batches` to shared [`FleetStats`] and
/// acknowledges it. The thread ends when the ingest drops its sender.
pub fn spawn_sink(
    batches: std::sync::mpsc::Receiver<tessera_ingest::ShardBatch>,
) -> (std::sync::Arc<std::sync::Mutex<FleetStats>>, std::thread::JoinHandle<()>) {
    let stats = std::sync::Arc::new(std::sync::Mutex::new(FleetStats::default()));
    let shared = stats.clone();
    let handle = std::thread::Builder::new()
        .name("tessera-stats".into())
        .spawn(move || {
            for b in batches {
                shared.lock().expect("not poisoned").add_batch(b.shard, &b.batch);
                b.ack.ack();
            }
        })
        .expect("spawning the stats thread");
    (stats, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_motors_count_one_batch_each() {
        use tessera_core::{MotorId, Reading, SiteId};
        let reading = |motor: &str, seq: u64| Reading {
            motor_id: MotorId::new(motor).unwrap(),
            site_id: SiteId::new("s").unwrap(),
            event_time_ms: seq as i64,
            sequence: seq,
            channels: [Some(1.0); 7],
            extra: Default::default(),
        };
        let mut builder = tessera_ingest::ShardBuilder::default();
        for seq in 0..3 {
            builder.append(&reading("A", seq));
            builder.append(&reading("B", seq));
        }
        let mut stats = FleetStats::default();
        stats.add_batch(0, &builder.finish());
        builder.append(&reading("A", 2));
        stats.add_batch(0, &builder.finish());
        assert_eq!((stats.motors["A"].batches, stats.motors["B"].batches), (2, 1));
        assert_eq!((stats.motors["A"].rows, stats.motors["A"].duplicates, stats.duplicates), (4, 1, 1));
        assert_eq!(stats.unique_rows(), 6);
    }

    #[test]
    fn seen_sequences_count_duplicates_and_gaps() {
        let mut s = SeenSequences::default();
        assert!(s.insert(0));
        assert!(s.insert(2));
        assert!(!s.insert(2));
        assert_eq!((s.unique(), s.highest()), (2, Some(2)));
        assert!(s.insert(1));
        assert!(!s.insert(0));
        assert_eq!((s.below, s.ahead.len()), (3, 0), "collapses back to O(1)");
    }
}
