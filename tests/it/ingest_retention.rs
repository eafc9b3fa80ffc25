//! Readings the log deleted before they were read (retention; here the embedded Kafka's own
//! limit of 5 MB per partition) are not lost silently: the ingest counts the offsets it never
//! got and warns, naming the partition and the range.

use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tessera_ingest::{Ingest, PartitionStart, PartitionStates, TopicPartition};
use tessera_suite::fleet_stats::FleetStats;
use tessera_suite::{producer, publish, test_fleet};
use tessera_workload::producer::WireFormat;

use crate::{embedded_kafka, ingest_config};

/// Every partition's checkpoint says: resume at offset 0.
struct CheckpointAtZero;

impl PartitionStates for CheckpointAtZero {
    fn assigned(&self, partitions: &[TopicPartition]) -> Result<Vec<PartitionStart>, String> {
        Ok(partitions
            .iter()
            .map(|(topic, partition)| PartitionStart {
                topic: topic.clone(),
                partition: *partition,
                resume_at: Some(0),
                state: None,
                stale: false,
            })
            .collect())
    }
}

#[test]
fn offsets_the_log_deleted_before_they_were_read_are_counted_as_skipped() {
    let (_kafka, brokers) = embedded_kafka(1, 1);
    // 6.4 MB of (undecodable) messages, one message set each: the embedded Kafka drops the
    // oldest sets to keep the partition within 5 MB. Then readings.
    let raw: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("linger.ms", "0").create().unwrap();
    let filler = vec![0xffu8; 64 * 1024];
    for _ in 0..100 {
        raw.send(BaseRecord::<(), [u8]>::to("telemetry").payload(&filler[..])).unwrap();
        raw.flush(Duration::from_secs(10)).unwrap();
    }
    let sent =
        publish(&mut test_fleet(10, 20, 3), &producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap(), None)
            .unwrap();
    let (low, high) = raw.client().fetch_watermarks("telemetry", 0, Duration::from_secs(10)).unwrap();
    assert!(low > 0, "the embedded Kafka dropped the oldest messages (log start {low})");

    // A node whose checkpoint is older than the log's start.
    crate::init_logging();
    let (tx, batches) = sync_channel(32);
    let ingest = Ingest::start_with_states(
        ingest_config(&brokers, "retention", "telemetry", "dead-letters"),
        tx,
        Arc::new(CheckpointAtZero),
    )
    .unwrap();
    let mut stats = FleetStats::default();
    tessera_suite::collect_until(&batches, &mut stats, sent.readings, Duration::from_secs(60));
    let report = ingest.stop().unwrap();
    drop(batches);
    println!(
        "retention run: log start {low}, end {high}; consumed {} messages, {} offsets skipped",
        report.messages, report.offsets_skipped
    );
    assert_eq!(stats.unique_rows(), sent.readings, "what the log still had was read");
    assert_eq!(report.messages, (high - low) as u64, "from the log's start to its end");
    assert_eq!(report.offsets_skipped, low as u64, "the deleted offsets are counted");
}

/// A checkpoint older than the group's committed offset (say, left on a volume the
/// partition's later owners never wrote) is never used to rewind: the partition starts at the
/// committed offset, its checkpoint counted as stale, and nothing before it is read again.
#[test]
fn a_checkpoint_older_than_the_committed_offset_does_not_rewind() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
    use rdkafka::{Offset, TopicPartitionList};

    let (_kafka, brokers) = embedded_kafka(1, 1);
    let sent =
        publish(&mut test_fleet(10, 20, 3), &producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap(), None)
            .unwrap();
    let raw: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let (_, high) = raw.client().fetch_watermarks("telemetry", 0, Duration::from_secs(10)).unwrap();
    // The group has committed half the partition (as its later owners would have).
    let committed = high / 2;
    let group: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "stale").create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("telemetry", 0, Offset::Offset(committed)).unwrap();
    group.commit(&offsets, CommitMode::Sync).unwrap();
    drop(group);

    crate::init_logging();
    let (tx, batches) = sync_channel(32);
    let ingest = Ingest::start_with_states(
        ingest_config(&brokers, "stale", "telemetry", "dead-letters"),
        tx,
        Arc::new(CheckpointAtZero),
    )
    .unwrap();
    let mut stats = FleetStats::default();
    let expected = sent.readings * (high - committed) as u64 / high as u64;
    tessera_suite::collect_until(&batches, &mut stats, expected, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let report = ingest.stop().unwrap();
    drop(batches);
    assert_eq!(report.stale_checkpoints, 1, "{report:?}");
    assert_eq!(report.resumed_at_checkpoint, 0, "{report:?}");
    assert_eq!(report.messages, (high - committed) as u64, "from the committed offset on, nothing before it");
}
