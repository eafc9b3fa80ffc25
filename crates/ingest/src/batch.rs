//! Building Arrow record batches of readings, one builder per motor shard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{Float64Builder, MapBuilder, StringBuilder, TimestampMillisecondBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use tessera_core::{
    Channel, MotorId, Reading, ReadingFingerprint, ReadingRef, SiteId, TelemetryColumn, shard_of_id, telemetry_schema,
};

/// Builds one [`telemetry_schema`] batch, row by row.
#[derive(Debug)]
pub struct ShardBuilder {
    motor_id: StringBuilder,
    site_id: StringBuilder,
    ts: TimestampMillisecondBuilder,
    seq: UInt64Builder,
    channels: [Float64Builder; 7],
    extra: MapBuilder<StringBuilder, Float64Builder>,
    rows: usize,
    first_row_at: Option<Instant>,
    tags: Vec<u64>,
}

impl Default for ShardBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl ShardBuilder {
    /// A builder with room for `rows` rows before it reallocates.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            motor_id: StringBuilder::with_capacity(rows, rows * 8),
            site_id: StringBuilder::with_capacity(rows, rows * 8),
            ts: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            seq: UInt64Builder::with_capacity(rows),
            channels: std::array::from_fn(|_| Float64Builder::with_capacity(rows)),
            extra: MapBuilder::new(None, StringBuilder::new(), Float64Builder::new()),
            rows: 0,
            first_row_at: None,
            tags: Vec::new(),
        }
    }

    /// Appends one reading.
    pub fn append(&mut self, r: &Reading) {
        self.append_ref(&r.view());
    }

    /// Appends one borrowed reading (the ingest's path: its strings are copied once, into the
    /// columns).
    pub fn append_ref(&mut self, r: &ReadingRef<'_>) {
        self.motor_id.append_value(r.motor_id);
        self.site_id.append_value(r.site_id);
        self.ts.append_value(r.event_time_ms);
        self.seq.append_value(r.sequence);
        for (builder, value) in self.channels.iter_mut().zip(r.channels) {
            builder.append_option(value);
        }
        for (name, value) in r.extra.iter() {
            self.extra.keys().append_value(name);
            self.extra.values().append_value(value);
        }
        self.extra.append(true).expect("keys and values are appended in pairs");
        self.rows += 1;
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Builds the batch and empties the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.motor_id.finish()),
            Arc::new(self.site_id.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.seq.finish()),
        ];
        columns.extend(self.channels.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(self.extra.finish()));
        self.rows = 0;
        self.first_row_at = None;
        RecordBatch::try_new(telemetry_schema(), columns).expect("builders follow telemetry_schema")
    }
}

/// A batch flushed from one shard, with the tags of the rows in it (the pipeline's chunk ids).
#[derive(Debug)]
pub struct FlushedBatch {
    /// The shard the batch's motors hash to.
    pub shard: u32,
    /// The rows.
    pub batch: RecordBatch,
    /// The distinct tags of the rows, in first-seen order.
    pub tags: Vec<u64>,
}

/// What [`ShardedBatcher::push`] did.
#[derive(Debug)]
pub struct PushOutcome {
    /// The reading's tag was new to its shard's open batch (the caller may want to hold it).
    pub new_tag: Option<u64>,
    /// The shard reached its row limit and was flushed.
    pub flushed: Option<FlushedBatch>,
}

/// Spreads readings over shards by motor id and cuts each shard's rows into batches by row
/// count or age. A motor always lands in the same shard, so its readings stay in order.
#[derive(Debug)]
pub struct ShardedBatcher {
    shards: Vec<ShardBuilder>,
    max_rows: usize,
    max_age: Duration,
}

impl ShardedBatcher {
    /// A batcher over `shard_count` shards (at least 1).
    pub fn new(shard_count: u32, max_rows: usize, max_age: Duration) -> Self {
        let shards = (0..shard_count.max(1)).map(|_| ShardBuilder::with_capacity(max_rows.min(65_536))).collect();
        Self { shards, max_rows, max_age }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Appends a reading to its motor's shard, tagged with `tag`.
    pub fn push(&mut self, reading: &ReadingRef<'_>, tag: u64, now: Instant) -> PushOutcome {
        let shard = shard_of_id(reading.motor_id, self.shard_count());
        let builder = &mut self.shards[shard as usize];
        builder.first_row_at.get_or_insert(now);
        builder.append_ref(reading);
        let new_tag = (builder.tags.last() != Some(&tag)).then(|| {
            builder.tags.push(tag);
            tag
        });
        let flushed = (builder.rows >= self.max_rows).then(|| Self::flush(builder, shard));
        PushOutcome { new_tag, flushed }
    }

    /// Flushes every shard whose oldest row is older than the age limit.
    pub fn flush_aged(&mut self, now: Instant) -> Vec<FlushedBatch> {
        let max_age = self.max_age;
        self.flush_where(|b| b.first_row_at.is_some_and(|t| now.duration_since(t) >= max_age))
    }

    /// Flushes every non-empty shard.
    pub fn flush_all(&mut self) -> Vec<FlushedBatch> {
        self.flush_where(|b| b.rows > 0)
    }

    fn flush_where(&mut self, due: impl Fn(&ShardBuilder) -> bool) -> Vec<FlushedBatch> {
        self.shards
            .iter_mut()
            .enumerate()
            .filter(|(_, b)| b.rows > 0 && due(b))
            .map(|(i, b)| Self::flush(b, i as u32))
            .collect()
    }

    fn flush(builder: &mut ShardBuilder, shard: u32) -> FlushedBatch {
        let tags = std::mem::take(&mut builder.tags);
        FlushedBatch { shard, batch: builder.finish(), tags }
    }
}

/// Reads the readings back out of a telemetry batch (tests, replay checks, tools).
///
/// Panics if the batch does not follow [`telemetry_schema`] — it is meant for batches this
/// crate built.
pub fn readings_from_batch(batch: &RecordBatch) -> Vec<Reading> {
    let cols = TelemetryColumns::of(batch);
    (0..batch.num_rows())
        .map(|row| {
            let (names, values) = cols.extra_at(row);
            Reading {
                motor_id: MotorId::new(cols.motor_id.value(row)).expect("stored ids are valid"),
                site_id: SiteId::new(cols.site_id.value(row)).expect("stored ids are valid"),
                event_time_ms: cols.ts.value(row),
                sequence: cols.seq.value(row),
                channels: std::array::from_fn(|i| cols.channel(i, row)),
                extra: (0..names.len()).map(|i| (names.value(i).to_string(), values.value(i))).collect(),
            }
        })
        .collect()
}

/// Row count and the wrapping sum of [`Reading::fingerprint`]s of a telemetry batch.
pub fn batch_checksum(batch: &RecordBatch) -> (u64, u64) {
    let sum = row_fingerprints(batch).into_iter().fold(0u64, u64::wrapping_add);
    (batch.num_rows() as u64, sum)
}

/// The [`Reading::fingerprint`] of every row of a telemetry batch, computed from the columns
/// without building readings.
pub fn row_fingerprints(batch: &RecordBatch) -> Vec<u64> {
    let cols = TelemetryColumns::of(batch);
    (0..batch.num_rows())
        .map(|row| {
            let mut h = ReadingFingerprint::new(
                cols.motor_id.value(row),
                cols.site_id.value(row),
                cols.ts.value(row),
                cols.seq.value(row),
            );
            for i in 0..Channel::ALL.len() {
                h.channel(cols.channel(i, row));
            }
            let (names, values) = cols.extra_at(row);
            for i in 0..names.len() {
                h.extra(names.value(i), values.value(i));
            }
            h.finish()
        })
        .collect()
}

/// Typed views of a telemetry batch's columns.
struct TelemetryColumns<'a> {
    motor_id: &'a arrow_array::StringArray,
    site_id: &'a arrow_array::StringArray,
    ts: &'a arrow_array::PrimitiveArray<TimestampMillisecondType>,
    seq: &'a arrow_array::PrimitiveArray<UInt64Type>,
    channels: Vec<&'a arrow_array::PrimitiveArray<Float64Type>>,
    extra: &'a arrow_array::MapArray,
}

impl<'a> TelemetryColumns<'a> {
    fn of(batch: &'a RecordBatch) -> Self {
        let first = TelemetryColumn::FirstChannel as usize;
        Self {
            motor_id: batch.column(TelemetryColumn::MotorId as usize).as_string::<i32>(),
            site_id: batch.column(TelemetryColumn::SiteId as usize).as_string::<i32>(),
            ts: batch.column(TelemetryColumn::Ts as usize).as_primitive(),
            seq: batch.column(TelemetryColumn::Seq as usize).as_primitive(),
            channels: (0..Channel::ALL.len()).map(|i| batch.column(first + i).as_primitive()).collect(),
            extra: batch.column(TelemetryColumn::Extra as usize).as_map(),
        }
    }

    fn channel(&self, i: usize, row: usize) -> Option<f64> {
        let col = self.channels[i];
        col.is_valid(row).then(|| col.value(row))
    }

    fn extra_at(&self, row: usize) -> (arrow_array::StringArray, arrow_array::Float64Array) {
        let entries = self.extra.value(row);
        (entries.column(0).as_string::<i32>().clone(), entries.column(1).as_primitive::<Float64Type>().clone())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn reading(motor: &str, seq: u64) -> Reading {
        Reading {
            motor_id: MotorId::new(motor).unwrap(),
            site_id: SiteId::new("site-a").unwrap(),
            event_time_ms: 1_700_000_000_000 + seq as i64,
            sequence: seq,
            channels: [Some(1.0), None, Some(60.0 + seq as f64), Some(2.0), None, None, Some(1500.0)],
            extra: if seq.is_multiple_of(2) { BTreeMap::from([("flow".into(), seq as f64)]) } else { BTreeMap::new() },
        }
    }

    #[test]
    fn batches_round_trip_and_checksum_matches() {
        let mut b = ShardBuilder::default();
        let readings: Vec<Reading> = (0..5).map(|s| reading("M1", s)).collect();
        readings.iter().for_each(|r| b.append(r));
        let batch = b.finish();
        assert_eq!(batch.schema(), telemetry_schema());
        assert_eq!(readings_from_batch(&batch), readings);
        let expected = readings.iter().fold(0u64, |acc, r| acc.wrapping_add(r.fingerprint()));
        assert_eq!(batch_checksum(&batch), (5, expected));
        assert_eq!(b.rows(), 0);
    }

    #[test]
    fn batcher_keeps_a_motor_in_one_shard_and_flushes_by_rows_and_age() {
        let t0 = Instant::now();
        let mut batcher = ShardedBatcher::new(4, 3, Duration::from_millis(100));
        let mut flushed = Vec::new();
        for seq in 0..3 {
            let out = batcher.push(&reading("M1", seq).view(), 7 + seq / 2, t0);
            assert_eq!(out.new_tag.is_some(), seq != 1, "tag 7 then 8 are new, the repeat is not");
            flushed.extend(out.flushed);
        }
        assert_eq!(flushed.len(), 1, "the third row fills the shard");
        assert_eq!(flushed[0].shard, tessera_core::shard_of(&MotorId::new("M1").unwrap(), 4));
        assert_eq!(flushed[0].tags, vec![7, 8]);
        assert_eq!(readings_from_batch(&flushed[0].batch).iter().map(|r| r.sequence).collect::<Vec<_>>(), [0, 1, 2]);

        batcher.push(&reading("M2", 0).view(), 9, t0);
        assert!(batcher.flush_aged(t0 + Duration::from_millis(50)).is_empty());
        let aged = batcher.flush_aged(t0 + Duration::from_millis(100));
        assert_eq!(aged.len(), 1);
        assert_eq!(aged[0].batch.num_rows(), 1);
        assert!(batcher.flush_all().is_empty());
    }
}
