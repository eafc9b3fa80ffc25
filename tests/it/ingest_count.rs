//! 100 k simulated readings through the embedded Kafka and the ingest: every one arrives,
//! exactly once, bit for bit (count and checksum), and the offsets are committed to the end.

use std::time::Duration;

use tessera_suite::fleet_stats::FleetStats;
use tessera_suite::{committed_and_end, producer, publish, test_fleet};
use tessera_workload::producer::WireFormat;

use crate::{embedded_kafka, ingest_config, start_ingest};

#[test]
fn hundred_thousand_readings_arrive_with_equal_count_and_checksum() {
    let (_kafka, brokers) = embedded_kafka(3, 6);

    let mut sim = test_fleet(100, 1000, 1);
    let sent = publish(&mut sim, &producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap(), None).unwrap();
    assert_eq!(sent.readings, 100_000);

    let (ingest, batches) = start_ingest(ingest_config(&brokers, "count", "telemetry", "dead-letters"));
    let mut stats = FleetStats::default();
    tessera_suite::collect_until(&batches, &mut stats, sent.readings, Duration::from_secs(180));
    let report = ingest.stop().unwrap();
    // Whatever was flushed while stopping.
    for b in batches.try_iter() {
        stats.add_batch(b.shard, &b.batch);
        b.ack.ack();
    }

    println!(
        "100k run: {} rows in {} batches, {} duplicates, {} commits",
        stats.rows, stats.batches, stats.duplicates, report.commits
    );
    assert_eq!(stats.unique_rows(), sent.readings, "no reading lost");
    assert_eq!(stats.unique_checksum, sent.checksum, "every reading arrived unaltered");
    assert_eq!(stats.rows, sent.readings, "a clean run has no duplicates");
    assert_eq!(stats.motors.len(), 100);
    assert!(stats.motors.values().all(|m| m.missing() == 0 && m.rows == 1000));
    assert_eq!(report.readings_accepted, 100_000);
    assert_eq!(report.readings_rejected, 0);
    assert_eq!(report.messages, 100_000);

    for (partition, committed, end) in committed_and_end(&brokers, "count", "telemetry", 6).unwrap() {
        assert_eq!(committed, end, "partition {partition}: committed offset reaches the end");
    }
}
