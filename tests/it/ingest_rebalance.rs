//! A second ingest node joins the consumer group mid-stream: partitions move (cooperative
//! rebalance), nothing is lost, and the duplicates that at-least-once allows are counted.
//! Members stopped in the middle of their group's rebalance (a rolling deploy) stop, and lose
//! nothing either.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use tessera_ingest::{Ingest, ShardBatch};
use tessera_suite::fleet_stats::FleetStats;
use tessera_suite::{Published, committed_and_end, producer, publish, test_fleet};
use tessera_workload::producer::WireFormat;

use crate::{embedded_kafka, ingest_config};

/// Publishes `sim`'s readings, `steps` steps about every 100 ms, from a thread, while
/// `go_on` says so (given what is out so far) and the simulation lasts; what it published.
fn publish_while(
    brokers: &str,
    mut sim: tessera_workload::simulate::Simulator,
    steps: u64,
    go_on: impl Fn(&Published) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Published> {
    let brokers = brokers.to_string();
    std::thread::spawn(move || {
        let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
        let mut total = Published { readings: 0, checksum: 0 };
        while go_on(&total) {
            let part = publish(&mut sim, &p, Some(steps)).unwrap();
            if part.readings == 0 {
                break;
            }
            total.readings += part.readings;
            total.checksum = total.checksum.wrapping_add(part.checksum);
            std::thread::sleep(Duration::from_millis(100));
        }
        total
    })
}

/// Takes (and acknowledges) the batches still waiting.
fn take_the_rest(batches: &Receiver<ShardBatch>, stats: &mut FleetStats) {
    for batch in batches.try_iter() {
        stats.add_batch(batch.shard, &batch.batch);
        batch.ack.ack();
    }
}

#[test]
fn a_consumer_joining_mid_stream_loses_nothing() {
    let (_kafka, brokers) = embedded_kafka(3, 6);

    // Readings are published in the background, 1,000 every ~100 ms, until at least 60 k
    // are out and the second node has consumed something, so the stream is still flowing
    // while it joins (a group join takes seconds).
    let second_consumed = Arc::new(AtomicBool::new(false));
    let publisher = {
        let second_consumed = second_consumed.clone();
        publish_while(&brokers, test_fleet(100, 3000, 4), 10, move |out| {
            out.readings < 60_000 || !second_consumed.load(Ordering::SeqCst)
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
    take_the_rest(&batches, &mut stats);

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

/// A rolling deploy's shape: a member joins, and is stopped at 0 to 7.5 s into its join
/// (before, during and after the rebalance that gives it partitions), six times. Every stop returns (librdkafka's
/// close can wait forever for a rebalance event in flight as it begins; the ingest bounds it),
/// and the readings all arrive, from whichever member had them.
#[test]
fn members_stopped_in_the_middle_of_a_rebalance_stop_and_lose_nothing() {
    let (_kafka, brokers) = embedded_kafka(3, 6);
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let done = done.clone();
        publish_while(&brokers, test_fleet(60, 6000, 5), 5, move |_| !done.load(Ordering::SeqCst))
    };

    crate::init_logging();
    let (tx, batches) = sync_channel(32);
    let config = ingest_config(&brokers, "rolling", "telemetry", "dead-letters");
    let first = Ingest::start(config.clone(), tx.clone()).unwrap();
    let mut stats = FleetStats::default();
    tessera_suite::collect_until(&batches, &mut stats, 1_000, Duration::from_secs(60));

    let (mut longest_stop, mut stopped_holding) = (Duration::ZERO, 0);
    for round in 0..6u64 {
        let joining = Ingest::start(config.clone(), tx.clone()).unwrap();
        let until = Instant::now() + Duration::from_millis(round * 1500);
        while Instant::now() < until {
            tessera_suite::collect_until(&batches, &mut stats, u64::MAX, Duration::from_millis(50));
        }
        stopped_holding += usize::from(joining.metrics().snapshot().messages > 0);
        // The stop waits for its readings to be acknowledged: batches are taken meanwhile.
        let started = Instant::now();
        let stopping = std::thread::spawn(move || joining.stop());
        while !stopping.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "round {round}: a member stopped {} ms into its join has not stopped after 120 s",
                round * 1500
            );
            tessera_suite::collect_until(&batches, &mut stats, u64::MAX, Duration::from_millis(50));
        }
        stopping.join().unwrap().unwrap_or_else(|e| panic!("round {round}: the stop failed: {e}"));
        longest_stop = longest_stop.max(started.elapsed());
    }
    done.store(true, Ordering::SeqCst);
    let sent = publisher.join().unwrap();
    tessera_suite::collect_until(&batches, &mut stats, sent.readings, Duration::from_secs(120));
    let a = first.stop().unwrap();
    take_the_rest(&batches, &mut stats);
    println!(
        "rolling run: 6 members stopped 0-7.5 s into their join ({stopped_holding} holding partitions), the longest stop {longest_stop:.1?}; {} readings, {} unique, {} duplicates; the staying member consumed {} ({} rebalance events)",
        stats.rows,
        stats.unique_rows(),
        stats.duplicates,
        a.messages,
        a.rebalances
    );
    assert!(stopped_holding > 0, "some members were stopped holding partitions");
    assert_eq!(stats.unique_rows(), sent.readings, "nothing lost");
    assert_eq!(stats.unique_checksum, sent.checksum, "nothing altered");
    for (partition, committed, end) in committed_and_end(&brokers, "rolling", "telemetry", 6).unwrap() {
        assert_eq!(committed, end, "partition {partition} committed to the end");
    }
}
