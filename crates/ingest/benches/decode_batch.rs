//! Criterion bench of the ingest's CPU path without Kafka: decode + validate + shard +
//! append to Arrow builders (+ flush), per message, for protobuf and JSON. One thread, so
//! the throughput is events per second per core.
//!
//! `cargo bench -p tessera-ingest --bench decode_batch`

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use tessera_core::{MotorId, Reading, SiteId, ValidationRules};
use tessera_ingest::{Encoding, MessageLimits, ShardedBatcher, decode_message};
use tessera_proto::telemetry::MotorReading;

const MESSAGES: usize = 10_000;

fn readings() -> Vec<Reading> {
    let now = 1_800_000_000_000;
    (0..MESSAGES)
        .map(|i| Reading {
            motor_id: MotorId::new(format!("M{:04}", i % 1000 + 1)).unwrap(),
            site_id: SiteId::new(format!("site-{}", ["a", "b", "c"][i % 3])).unwrap(),
            event_time_ms: now - 10_000 + (i / 1000) as i64 * 100,
            sequence: (i / 1000) as u64,
            channels: [
                Some(20.0 + (i % 7) as f64 * 0.37),
                Some(400.0 + (i % 5) as f64 * 0.5),
                Some(60.0 + (i % 11) as f64 * 0.1),
                Some(2.0 + (i % 13) as f64 * 0.01),
                Some(1.8 + (i % 17) as f64 * 0.01),
                Some(1.0 + (i % 19) as f64 * 0.01),
                Some(1480.0 + (i % 23) as f64),
            ],
            extra: BTreeMap::new(),
        })
        .collect()
}

fn json_of(r: &Reading) -> Vec<u8> {
    let c = |i: usize| r.channels[i].unwrap();
    format!(
        r#"{{"motor_id":"{}","site_id":"{}","event_time_ms":{},"sequence":{},"current_a":{},"voltage_v":{},"temperature_c":{},"vibration_x_rms":{},"vibration_y_rms":{},"vibration_z_rms":{},"speed_rpm":{}}}"#,
        r.motor_id, r.site_id, r.event_time_ms, r.sequence, c(0), c(1), c(2), c(3), c(4), c(5), c(6)
    )
    .into_bytes()
}

fn run(messages: &[Vec<u8>], encoding: Encoding, rules: &ValidationRules) -> usize {
    let limits = MessageLimits { max_message_bytes: 1 << 20, max_readings_per_message: 10_000 };
    let mut batcher = ShardedBatcher::new(8, 8192, Duration::from_secs(1));
    let now = Instant::now();
    let mut rows = 0;
    for m in messages {
        let decoded = decode_message(m, None, encoding, limits, rules, 1_800_000_000_000).expect("valid input");
        for r in decoded.readings.iter() {
            if let Some(flushed) = batcher.push(&r, 0, now).flushed {
                rows += flushed.batch.num_rows();
            }
        }
    }
    rows + batcher.flush_all().iter().map(|b| b.batch.num_rows()).sum::<usize>()
}

fn bench(c: &mut Criterion) {
    let readings = readings();
    let proto: Vec<Vec<u8>> = readings.iter().map(|r| MotorReading::from(r).encode_to_vec()).collect();
    let json: Vec<Vec<u8>> = readings.iter().map(json_of).collect();
    let rules = ValidationRules::default();
    let mut group = c.benchmark_group("decode_validate_shard_batch");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("protobuf", |b| {
        b.iter_batched(
            || (),
            |()| assert_eq!(run(&proto, Encoding::ProtobufReading, &rules), MESSAGES),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("json", |b| {
        b.iter_batched(|| (), |()| assert_eq!(run(&json, Encoding::Json, &rules), MESSAGES), BatchSize::SmallInput)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
