//! End to end against a separate broker process (Tansu): readings in protobuf and in JSON
//! gateway batches, plus bad input, through the ingest; count, checksum and dead letters.

use std::time::Duration;

use tessera_node::topics::ensure_topics;
use tessera_suite::fleet_stats::FleetStats;
use tessera_suite::{TansuBroker, header, producer, publish, read_topic, test_fleet};
use tessera_workload::producer::WireFormat;

use crate::{ingest_config, start_ingest};

#[test]
fn ingest_against_a_real_broker_process() {
    let broker = TansuBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    ensure_topics(&brokers, &[("telemetry", 6), ("dead-letters", 1)]).unwrap();

    let proto =
        publish(&mut test_fleet(50, 200, 5), &producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap(), None)
            .unwrap();
    // The same 50 motors, continued in JSON gateway batches: skip the 200 steps already
    // published as protobuf, so sequence numbers go on instead of repeating.
    let mut json_fleet = test_fleet(50, 400, 5);
    for _ in 0..200 {
        json_fleet.next_step();
    }
    let json_producer = producer(&brokers, "telemetry", WireFormat::JsonBatch).unwrap();
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

    assert_eq!(stats.unique_rows(), expected);
    assert_eq!(stats.unique_checksum, proto.checksum.wrapping_add(json.checksum));
    assert!(stats.motors.values().all(|m| m.rows >= 400 && m.missing() == 0));
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], tessera_ingest::dead_letter_headers::REASON).as_deref(), Some("malformed"));
    assert_eq!(report.readings_rejected, 1);
    drop(broker);
}
