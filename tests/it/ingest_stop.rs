//! Stopping while downstream has stopped reading: `stop` still returns, what downstream did
//! not take stays uncommitted, and a restarted node consumes it — nothing is lost.

use std::sync::mpsc::sync_channel;
use std::time::Duration;

use tessera_ingest::Ingest;
use tessera_suite::fleet_stats::FleetStats;
use tessera_suite::{committed_and_end, producer, publish, test_fleet};
use tessera_workload::producer::WireFormat;

use crate::{embedded_kafka, ingest_config, start_ingest};

#[test]
fn stop_returns_when_downstream_stops_reading_and_nothing_is_lost() {
    let (_kafka, brokers) = embedded_kafka(1, 2);
    let sent =
        publish(&mut test_fleet(100, 200, 6), &producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap(), None)
            .unwrap();

    let mut config = ingest_config(&brokers, "stop", "telemetry", "dead-letters");
    config.batch_max_rows = 100;
    config.drain_timeout = Duration::from_secs(1);
    let (tx, batches) = sync_channel(1);
    let ingest = Ingest::start(config.clone(), tx).unwrap();
    let mut stats = FleetStats::default();
    let first = batches.recv_timeout(Duration::from_secs(60)).expect("a first batch");
    stats.add_batch(first.shard, &first.batch);
    first.ack.ack();

    // Downstream reads no more, but keeps the receiver: stop must still return.
    let (done_tx, done) = sync_channel(1);
    std::thread::spawn(move || done_tx.send(ingest.stop()).unwrap());
    let report = done.recv_timeout(Duration::from_secs(60)).expect("stop returned").unwrap();
    drop(batches);
    assert!(report.readings_accepted >= 100);

    let committed: i64 =
        committed_and_end(&brokers, "stop", "telemetry", 2).unwrap().iter().map(|(_, c, _)| (*c).max(0)).sum();
    assert!(
        (committed as u64) < sent.readings,
        "what downstream never took is not committed ({committed} of {})",
        sent.readings
    );

    let (restarted, batches) = start_ingest(config);
    tessera_suite::collect_until(&batches, &mut stats, sent.readings, Duration::from_secs(120));
    restarted.stop().unwrap();
    println!(
        "stop run: {} readings, {} unique, {} duplicates after restart",
        stats.rows,
        stats.unique_rows(),
        stats.duplicates
    );
    assert_eq!(stats.unique_rows(), sent.readings, "nothing lost across the stop");
    assert_eq!(stats.unique_checksum, sent.checksum);
}
