//! Tessera's integration tests, in one binary to keep link time down. Kafka is real
//! protocol throughout: librdkafka's mock cluster (the embedded Kafka) or a Tansu broker
//! process.

mod cli_process;
mod control_cluster;
mod control_plane;
mod ingest_bad_input;
mod ingest_count;
mod ingest_rebalance;
mod ingest_real_broker;
mod ingest_retention;
mod ingest_stop;
mod migration;
mod demo;
mod deploy_script;
mod detect_kafka;
mod eval_detection;
mod fault;
mod flight_sql;
mod golden;
mod helm_chart;
mod mtls;
mod observability_assets;
mod replay_skab;
mod security;
mod tidy;

use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Duration;

use tessera_ingest::{Encoding, Ingest, IngestConfig, ShardBatch, TopicConfig};
use tessera_workload::embedded::EmbeddedKafka;

/// An embedded Kafka with `brokers` brokers, a `telemetry` topic of `partitions` partitions
/// and a one-partition `dead-letters` topic; returns it and its bootstrap servers.
pub fn embedded_kafka(brokers: i32, partitions: i32) -> (EmbeddedKafka, String) {
    let kafka = EmbeddedKafka::start(brokers).expect("the embedded Kafka starts");
    kafka.create_topic("telemetry", partitions).expect("topic");
    kafka.create_topic("dead-letters", 1).expect("topic");
    let bootstrap = kafka.bootstrap_servers();
    (kafka, bootstrap)
}

/// An ingest config for tests: small batches, quick commits.
pub fn ingest_config(brokers: &str, group: &str, topic: &str, dead_letters: &str) -> IngestConfig {
    IngestConfig {
        brokers: brokers.to_string(),
        group_id: group.to_string(),
        topics: vec![TopicConfig { name: topic.to_string(), encoding: Encoding::ProtobufReading }],
        dead_letter_topic: dead_letters.to_string(),
        shards: 4,
        batch_max_rows: 2048,
        batch_max_age: Duration::from_millis(100),
        commit_interval: Duration::from_millis(200),
        // librdkafka's mock coordinator finishes a rebalance only when every member has
        // rejoined or timed out: short heartbeats and sessions keep group changes quick.
        kafka: [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Logs to the test output, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// Starts an ingest whose batches arrive on the returned receiver.
pub fn start_ingest(config: IngestConfig) -> (Ingest, Receiver<ShardBatch>) {
    init_logging();
    let (tx, rx) = sync_channel(32);
    (Ingest::start(config, tx).expect("ingest starts"), rx)
}
