//! Malformed, oversized, NaN, far-future and misspelled input, and a gateway batch with one
//! bad reading: each reaches the dead-letter topic with its bytes and reason, nothing panics,
//! and the valid messages around them are unaffected.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use tessera_core::Channel;
use tessera_ingest::dead_letter_headers as dlq;
use tessera_proto::CONTENT_TYPE_BATCH;
use tessera_proto::telemetry::{MotorReading, MotorReadingBatch};
use tessera_suite::fleet_stats::FleetStats;
use tessera_suite::{header, payload, producer, read_topic, test_fleet};
use tessera_workload::bad_input::BadInput;
use tessera_workload::producer::WireFormat;

use crate::{embedded_kafka, ingest_config, start_ingest};

#[test]
fn bad_messages_go_to_the_dead_letter_topic_with_reasons() {
    let (_kafka, brokers) = embedded_kafka(1, 3);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;

    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
    let mut sim = test_fleet(20, 50, 2);
    let (mut good, mut checksum) = (0u64, 0u64);
    let mut sent_bad: Vec<(Vec<u8>, &str)> = Vec::new();
    let kinds = BadInput::all(600_000);
    let mut step = 0;
    while let Some(readings) = sim.next_step() {
        p.send_readings(&readings).unwrap();
        for r in &readings {
            good += 1;
            checksum = checksum.wrapping_add(r.fingerprint());
        }
        // One bad message after every 10th step, interleaved with the good ones.
        if step % 10 == 0 && sent_bad.len() < kinds.len() {
            let kind = kinds[sent_bad.len()];
            let (bytes, content_type) = kind.encode(&readings[0], now_ms);
            p.send_raw(Some(b"M0001"), &bytes, Some(content_type)).unwrap();
            sent_bad.push((bytes, kind.expected_code()));
        }
        step += 1;
    }
    // A gateway batch: two valid readings of a new motor around one NaN reading.
    let mut template = test_fleet(1, 1, 3).next_step().unwrap().remove(0);
    template.motor_id = tessera_core::MotorId::new("GW-7").unwrap();
    let mut batch = Vec::new();
    for seq in 0..3 {
        let mut r = template.clone();
        r.sequence = seq;
        if seq == 1 {
            r.set(Channel::CurrentA, Some(f64::NAN));
        } else {
            good += 1;
            checksum = checksum.wrapping_add(r.fingerprint());
        }
        batch.push(MotorReading::from(&r));
    }
    let batch_bytes = MotorReadingBatch { readings: batch }.encode_to_vec();
    p.send_raw(Some(b"gateway-7"), &batch_bytes, Some(CONTENT_TYPE_BATCH)).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(sent_bad.len(), 5);

    let (ingest, batches) = start_ingest(ingest_config(&brokers, "bad", "telemetry", "dead-letters"));
    let mut stats = FleetStats::default();
    tessera_suite::collect_until(&batches, &mut stats, good, Duration::from_secs(120));
    let dead = read_topic(&brokers, "dead-letters", 6, Duration::from_secs(60)).unwrap();
    assert!(!ingest.is_finished(), "bad input does not stop the ingest");
    let report = ingest.stop().unwrap();

    assert_eq!(stats.unique_rows(), good, "valid neighbours all arrive");
    assert_eq!(stats.unique_checksum, checksum);
    assert_eq!(dead.len(), 6, "five bad messages and one partly bad batch, nothing more");
    for (bytes, code) in &sent_bad {
        let m = dead
            .iter()
            .find(|m| payload(m) == bytes.as_slice())
            .unwrap_or_else(|| panic!("{code} message is in the dead-letter topic byte for byte"));
        assert_eq!(header(m, dlq::REASON).as_deref(), Some(*code));
        assert!(!header(m, dlq::DETAIL).unwrap().is_empty());
        assert_eq!(header(m, dlq::SOURCE_TOPIC).as_deref(), Some("telemetry"));
        assert!(header(m, dlq::SOURCE_OFFSET).unwrap().parse::<i64>().is_ok());
        assert!(header(m, dlq::SOURCE_PARTITION).unwrap().parse::<i32>().is_ok());
        assert!(header(m, "content-type").is_some(), "original headers are kept");
        assert_eq!(header(m, dlq::REJECTED_INDICES), None, "whole message rejected");
    }
    let partial =
        dead.iter().find(|m| payload(m) == batch_bytes.as_slice()).expect("the partly bad batch is dead-lettered");
    assert_eq!(header(partial, dlq::REASON).as_deref(), Some("not_finite"));
    assert_eq!(header(partial, dlq::REJECTED_INDICES).as_deref(), Some("1"));
    assert_eq!(header(partial, dlq::DETAIL).as_deref(), Some("reading 1: current_a is NaN or infinite"));
    assert_eq!(stats.motors["GW-7"].rows, 2, "the batch's valid readings were ingested");

    let by_reason: BTreeMap<_, _> = report.rejected_by_reason.iter().copied().collect();
    assert_eq!(
        by_reason,
        BTreeMap::from([("future_event_time", 1), ("malformed", 2), ("not_finite", 2), ("oversize", 1)])
    );
    assert_eq!(report.dead_letters_sent, 6);
}

/// Re-published messages (an attacker replaying captured traffic, or a producer retrying
/// without idempotence): each reading is taken once; every repeat reaches the dead-letter topic
/// byte for byte with reason `replayed_reading` and is counted.
#[test]
fn replayed_readings_are_taken_once_and_dead_lettered() {
    let (_kafka, brokers) = embedded_kafka(1, 2);
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
    let mut sim = test_fleet(5, 20, 4);
    let mut sent = Vec::new();
    while let Some(readings) = sim.next_step() {
        p.send_readings(&readings).unwrap();
        sent.extend(readings);
    }
    let replayed = &sent[..40];
    p.send_readings(replayed).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();

    let mut config = ingest_config(&brokers, "replay", "telemetry", "dead-letters");
    // With checkpoints the decoder learns of revocations and keeps the replay guard.
    config.checkpoint_interval = Duration::from_millis(500);
    let (ingest, batches) = start_ingest(config);
    let mut stats = FleetStats::default();
    tessera_suite::collect_until(&batches, &mut stats, sent.len() as u64, Duration::from_secs(120));
    let dead = read_topic(&brokers, "dead-letters", replayed.len(), Duration::from_secs(60)).unwrap();
    // Anything still in flight is counted too, then the ingest stops.
    while let Ok(b) = batches.recv_timeout(Duration::from_millis(500)) {
        stats.add_batch(b.shard, &b.batch);
        b.ack.ack();
    }
    let report = ingest.stop().unwrap();
    assert_eq!((stats.unique_rows(), stats.duplicates), (sent.len() as u64, 0), "each reading taken once");
    assert_eq!(dead.len(), replayed.len());
    for m in &dead {
        assert_eq!(header(m, dlq::REASON).as_deref(), Some("replayed_reading"));
        let reading = MotorReading::decode(payload(m)).expect("the original bytes");
        assert!(
            replayed.iter().any(|r| r.motor_id.as_str() == reading.motor_id && Some(r.sequence) == reading.sequence)
        );
    }
    let by_reason: BTreeMap<_, _> = report.rejected_by_reason.iter().copied().collect();
    assert_eq!(by_reason, BTreeMap::from([("replayed_reading", replayed.len() as u64)]));
}
