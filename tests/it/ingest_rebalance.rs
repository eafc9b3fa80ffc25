//! A second ingest node joins the consumer group mid-stream: partitions move (cooperative
//! rebalance), nothing is lost, and the duplicates that at-least-once allows are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use tessera_ingest::Ingest;
use tessera_suite::fleet_stats::FleetStats;
use tessera_suite::{committed_and_end, producer, publish, test_fleet};
use tessera_workload::producer::WireFormat;

use crate::{embedded_kafka, ingest_config};

#[test]
fn a_consumer_joining_mid_stream_loses_nothing() {
    let (_kafka, brokers) = embedded_kafka(3, 6);

    // Readings are published in the background, 1,000 every ~100 ms, until at least 60 k
    // are out and the second node has consumed something, so the stream is still flowing
    // while it joins (a group join takes seconds).
    let second_consumed = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (brokers, second_consumed) = (brokers.clone(), second_consumed.clone());
        std::thread::spawn(move || {
            let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
            let mut sim = test_fleet(100, 3000, 4);
            let mut total = tessera_suite::Published { readings: 0, checksum: 0 };
            while total.readings < 60_000 || !second_consumed.load(Ordering::SeqCst) {
                let part = publish(&mut sim, &p, Some(10)).unwrap();
                if part.readings == 0 {
                    break;
                }
                total.readings += part.readings;
                total.checksum = total.checksum.wrapping_add(part.checksum);
                std::thread::sleep(Duration::from_millis(100));
            }
            total
        })
    };

    crate::init_logging();
    let (tx, batches) = sync_channel(32);
    let config = ingest_config(&brokers, "rebalance", "telemetry", "dead-letters");
    let first = Ingest::start(config.clone(), tx.clone()).unwrap();
    let mut stats = FleetStats::default();
    tessera_suite::collect_until(&batches, &mut stats, 5_000, Duration::from_secs(60));
    assert!(stats.unique_rows() >= 5_000, "the first node is consuming");
    let rebalances_before = first.metrics().snapshot().rebalances;

    let second = Ingest::start(config, tx).unwrap();
    while !publisher.is_finished() {
        tessera_suite::collect_until(&batches, &mut stats, u64::MAX, Duration::from_millis(200));
        if second.metrics().snapshot().messages > 0 {
            second_consumed.store(true, Ordering::SeqCst);
        }
    }
    let sent = publisher.join().unwrap();
    assert!(second_consumed.load(Ordering::SeqCst), "the second node took over partitions before the data ran out");
    tessera_suite::collect_until(&batches, &mut stats, sent.readings, Duration::from_secs(120));

    let (a, b) = (first.stop().unwrap(), second.stop().unwrap());
    for batch in batches.try_iter() {
        stats.add_batch(batch.shard, &batch.batch);
        batch.ack.ack();
    }

    println!(
        "rebalance run: {} rows, {} unique, {} duplicates; node A consumed {} messages ({} rebalance events, {} failed commits), node B {} ({} failed commits)",
        stats.rows,
        stats.unique_rows(),
        stats.duplicates,
        a.messages,
        a.rebalances,
        a.commit_errors,
        b.messages,
        b.commit_errors
    );
    assert!(a.rebalances > rebalances_before, "the join caused a rebalance on the first node");
    assert!(b.messages > 0, "the second node took over partitions");
    assert_eq!(stats.unique_rows(), sent.readings, "nothing lost");
    assert_eq!(stats.unique_checksum, sent.checksum, "nothing altered");
    assert_eq!(stats.rows, a.readings_accepted + b.readings_accepted, "every batch was counted once");
    assert_eq!(stats.duplicates, stats.rows - sent.readings);
    for (partition, committed, end) in committed_and_end(&brokers, "rebalance", "telemetry", 6).unwrap() {
        assert_eq!(committed, end, "partition {partition} committed to the end");
    }
}
