//! Ingest configuration. Defaults suit one node of a plant; every field can be set from the
//! server's layered config (see `deploy/tessera.example.toml`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_core::{ConfigError, ValidationRules, ensure};

use crate::Result;

/// How a topic's messages are encoded when they carry no `content-type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One protobuf `MotorReading` per message.
    ProtobufReading,
    /// One protobuf `MotorReadingBatch` per message.
    ProtobufBatch,
    /// JSON: an object (one reading), an array or `{"readings": [...]}` (a batch).
    Json,
}

/// One topic to consume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// The topic's name.
    pub name: String,
    /// The encoding of messages without a `content-type` header.
    #[serde(default = "default_encoding")]
    pub encoding: Encoding,
}

fn default_encoding() -> Encoding {
    Encoding::ProtobufReading
}

/// How the node creates its input and dead-letter topics when they do not exist
/// (`[ingest.create_topics]`). Without it the node waits for them, checking every second, and
/// `/readyz` names the ones missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicCreation {
    /// Partitions of each topic created: the most ingest nodes one site's group can spread
    /// its work over.
    pub partitions: i32,
    /// Replicas of each partition; -1: the broker's `default.replication.factor`.
    pub replication_factor: i32,
}

impl Default for TopicCreation {
    fn default() -> Self {
        Self { partitions: 12, replication_factor: -1 }
    }
}

/// Everything the ingest needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group id; all ingest nodes of a site share it.
    pub group_id: String,
    /// Topics to consume.
    pub topics: Vec<TopicConfig>,
    /// Where rejected messages go, with their original bytes and the reason in headers.
    pub dead_letter_topic: String,
    /// Number of motor shards; a motor's shard is `xxh3_64(motor_id) % shards`.
    pub shards: u32,
    /// A shard's batch is flushed when it holds this many rows...
    pub batch_max_rows: usize,
    /// ...or when its oldest row has waited this long.
    #[serde(with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Messages handed from the consumer thread to the decoder at a time.
    pub chunk_max_messages: usize,
    /// Chunks waiting for the decoder before the consumer pauses its partitions. Together
    /// with the chunk size and the batch size this bounds the ingest's memory.
    pub max_chunks_in_flight: usize,
    /// Resident memory budget of the process, in MiB: at 90 % of it the consumer pauses its
    /// partitions until the process is back under 80 % (it keeps polling meanwhile, so it stays
    /// in its group); 0: no budget. Read from `/proc/self/status` (Linux).
    pub memory_budget_mb: u64,
    /// How often committable offsets are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How often a checkpoint barrier is sent downstream (see [`crate::Barrier`]); 0 s: never.
    /// With barriers, downstream acknowledges a batch only once a checkpoint covering it is
    /// durable, so commits follow checkpoints; on revoke and stop a barrier replaces the plain
    /// flush.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// On rebalance or shutdown, how long to wait for downstream to acknowledge what was
    /// handed on before committing what is committable and letting go.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Largest accepted message, in bytes.
    pub max_message_bytes: usize,
    /// Most readings in one batch message.
    pub max_readings_per_message: usize,
    /// Value and event-time rules.
    pub validation: ValidationRules,
    /// Extra librdkafka settings for the consumer and the dead-letter producer (TLS, SASL,
    /// `auto.offset.reset`, ...). They override Tessera's own choices.
    pub kafka: BTreeMap<String, String>,
    /// More `kafka` settings whose values are read from environment variables at start (a
    /// Kubernetes Secret's keys, so that no credential is in the config):
    /// `"sasl.password" = "KAFKA_PASSWORD"`. The node's config loading moves them into `kafka`.
    pub kafka_from_env: BTreeMap<String, String>,
    /// Whether (and how) the node creates missing input and dead-letter topics; `None`: it
    /// waits for someone else to.
    pub create_topics: Option<TopicCreation>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "tessera-ingest".into(),
            topics: vec![TopicConfig { name: "telemetry".into(), encoding: default_encoding() }],
            dead_letter_topic: "telemetry-dead-letter".into(),
            shards: 8,
            batch_max_rows: 8192,
            batch_max_age: Duration::from_millis(200),
            chunk_max_messages: 2048,
            max_chunks_in_flight: 8,
            memory_budget_mb: 0,
            commit_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            max_message_bytes: 512 << 10,
            max_readings_per_message: 10_000,
            validation: ValidationRules::default(),
            kafka: BTreeMap::new(),
            kafka_from_env: BTreeMap::new(),
            create_topics: None,
        }
    }
}

impl IngestConfig {
    /// Checks the configuration; the error names the offending field, relative to the ingest
    /// section (`shards`, `topics[0].name`, `validation.max_past`).
    pub fn validate(&self) -> Result<()> {
        ensure(!self.brokers.trim().is_empty(), "brokers", "must not be empty")?;
        ensure(!self.group_id.trim().is_empty(), "group_id", "must not be empty")?;
        ensure(!self.topics.is_empty(), "topics", "must name at least one topic")?;
        if let Some(i) = self.topics.iter().position(|t| t.name.trim().is_empty()) {
            return Err(ConfigError::new(format!("topics[{i}].name"), "must not be empty").into());
        }
        ensure(!self.dead_letter_topic.trim().is_empty(), "dead_letter_topic", "must not be empty")?;
        ensure(
            self.topics.iter().all(|t| t.name != self.dead_letter_topic),
            "dead_letter_topic",
            "must differ from every consumed topic",
        )?;
        ensure(self.shards > 0, "shards", "must be at least 1")?;
        ensure(self.batch_max_rows > 0, "batch_max_rows", "must be at least 1")?;
        ensure(!self.batch_max_age.is_zero(), "batch_max_age", "must be longer than 0")?;
        ensure(self.chunk_max_messages > 0, "chunk_max_messages", "must be at least 1")?;
        ensure(self.max_chunks_in_flight > 0, "max_chunks_in_flight", "must be at least 1")?;
        ensure(!self.commit_interval.is_zero(), "commit_interval", "must be longer than 0")?;
        ensure(self.max_message_bytes > 0, "max_message_bytes", "must be at least 1")?;
        ensure(self.max_readings_per_message > 0, "max_readings_per_message", "must be at least 1")?;
        self.validation.validate().map_err(|e| e.within("validation"))?;
        if let Some(create) = &self.create_topics {
            ensure(create.partitions > 0, "create_topics.partitions", "must be at least 1")?;
            ensure(
                create.replication_factor == -1 || create.replication_factor > 0,
                "create_topics.replication_factor",
                "must be at least 1, or -1 for the broker's default",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IngestError;

    #[test]
    fn default_is_valid_and_errors_name_fields() {
        IngestConfig::default().validate().unwrap();
        let c = IngestConfig { shards: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().to_string(), "invalid ingest config: shards: must be at least 1");
        let c = IngestConfig { dead_letter_topic: "telemetry".into(), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("dead_letter_topic"));
        let mut c = IngestConfig::default();
        c.validation.max_past_ms = -1;
        assert!(c.validate().unwrap_err().to_string().contains("validation.max_past"));
    }

    #[test]
    fn errors_carry_the_field_relative_to_the_ingest_section() {
        let field = |c: IngestConfig| match c.validate() {
            Err(IngestError::Config(e)) => e.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(IngestConfig { shards: 0, ..Default::default() }), "shards");
        assert_eq!(
            field(IngestConfig {
                topics: vec![TopicConfig { name: " ".into(), encoding: Encoding::Json }],
                ..Default::default()
            }),
            "topics[0].name"
        );
        let mut c = IngestConfig::default();
        c.validation.max_past_ms = -1;
        assert_eq!(field(c), "validation.max_past");
        let create = |partitions, replication_factor| IngestConfig {
            create_topics: Some(TopicCreation { partitions, replication_factor }),
            ..Default::default()
        };
        assert_eq!(field(create(0, -1)), "create_topics.partitions");
        assert_eq!(field(create(6, 0)), "create_topics.replication_factor");
        create(6, 3).validate().unwrap();
    }
}
