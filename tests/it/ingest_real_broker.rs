//! End to end against a separate broker process (Tansu): readings in protobuf and in JSON
//! gateway batches, plus bad input, through the ingest; count, checksum and dead letters.

use std::time::Duration;

use tessera_node::topics::ensure_topics;
use tessera_suite::fleet_stats::FleetStats;
use tessera_suite::{TansuBroker, header, publish, read_topic, test_fleet};
use tessera_workload::producer::{TelemetryProducer, WireFormat};

use crate::{ingest_config, start_ingest};

#[test]
fn ingest_against_a_real_broker_process() {
    let broker = TansuBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    ensure_topics(&brokers, &[("telemetry", 6), ("dead-letters", 1)]).unwrap();
    // One message per record batch: Tansu 0.6.0 answers a fetch at an offset inside a batch
    // with the next batch, so a consumer that paused its partitions (backpressure, which a
    // loaded machine brings on) and resumed inside a batch would lose the batch's rest to the
    // broker (counted as offsets skipped). See docs/RELIABILITY.md.
    let settings =
        [("batch.num.messages", "1"), ("linger.ms", "0")].map(|(k, v)| (k.to_string(), v.to_string())).into();
    let producer = |format| TelemetryProducer::new(&brokers, "telemetry", format, &settings).unwrap();

    let proto = publish(&mut test_fleet(50, 200, 5), &producer(WireFormat::Protobuf), None).unwrap();
    // The same 50 motors, continued in JSON gateway batches: skip the 200 steps already
    // published as protobuf, so sequence numbers go on instead of repeating.
    let mut json_fleet = test_fleet(50, 400, 5);
    for _ in 0..200 {
        json_fleet.next_step();
    }
    let json_producer = producer(WireFormat::JsonBatch);
    let json = publish(&mut json_fleet, &json_producer, None).unwrap();
    json_producer.send_raw(Some(b"M0001"), b"{\"motor_id\": ", Some("application/json")).unwrap();
    json_producer.flush(Duration::from_secs(30)).unwrap();
    let expected = proto.readings + json.readings;
    assert_eq!(expected, 20_000);

    let (ingest, batches) = start_ingest(ingest_config(&brokers, "e2e-real-broker", "telemetry", "dead-letters"));
    let mut stats = FleetStats::default();
    // A bound, not a timing: Tansu is slow when other tests load the machine.
    tessera_suite::collect_until(&batches, &mut stats, expected, Duration::from_secs(300));
    let dead = read_topic(&brokers, "dead-letters", 1, Duration::from_secs(60)).unwrap();
    let report = ingest.stop().unwrap();

    assert_eq!(
        stats.unique_rows(),
        expected,
        "offsets skipped {}, consumer pauses {}",
        report.offsets_skipped,
        report.memory_pauses
    );
    assert_eq!(stats.unique_checksum, proto.checksum.wrapping_add(json.checksum));
    assert!(stats.motors.values().all(|m| m.rows >= 400 && m.missing() == 0));
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], tessera_ingest::dead_letter_headers::REASON).as_deref(), Some("malformed"));
    assert_eq!(report.readings_rejected, 1);
    drop(broker);
}
