//! Publishing telemetry to Kafka the way motors and gateways do: keyed by motor id (or by
//! gateway for batches), with a `content-type` header naming the encoding.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Serialize};
use tessera_core::Reading;
use tessera_proto::json::reading_to_json;
use tessera_proto::telemetry::{MotorReading, MotorReadingBatch};
use tessera_proto::{CONTENT_TYPE_BATCH, CONTENT_TYPE_JSON, CONTENT_TYPE_READING};

use crate::error::{WorkloadError, kafka};

type Result<T, E = WorkloadError> = std::result::Result<T, E>;

/// How readings are put into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WireFormat {
    /// One protobuf `MotorReading` per message, key = motor id.
    Protobuf,
    /// One protobuf `MotorReadingBatch` per site and time step (an edge gateway), key = site.
    ProtobufBatch,
    /// One JSON object per message, key = motor id.
    Json,
    /// One JSON array per site and time step, key = site.
    JsonBatch,
}

#[derive(Default)]
struct DeliveryCounts {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct CountingContext(Arc<DeliveryCounts>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Relaxed);
                self.0.first_error.lock().expect("not poisoned").get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Delivery totals after a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Messages the broker acknowledged.
    pub delivered: u64,
    /// Messages that could not be delivered.
    pub failed: u64,
}

/// A Kafka producer of telemetry messages (idempotent, acks=all).
pub struct TelemetryProducer {
    producer: ThreadedProducer<CountingContext>,
    topic: String,
    format: WireFormat,
    counts: Arc<DeliveryCounts>,
    sent: AtomicU64,
}

impl TelemetryProducer {
    /// Connects a producer for `topic`; `kafka` holds extra librdkafka settings.
    pub fn new(brokers: &str, topic: &str, format: WireFormat, kafka: &BTreeMap<String, String>) -> Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000");
        for (k, v) in kafka {
            config.set(k, v);
        }
        let counts = Arc::new(DeliveryCounts::default());
        let producer = config
            .create_with_context(CountingContext(counts.clone()))
            .map_err(crate::error::kafka(format!("creating a Kafka producer for {brokers}")))?;
        Ok(Self { producer, topic: topic.to_string(), format, counts, sent: AtomicU64::new(0) })
    }

    /// Publishes readings (one time step of a fleet, or any list) in the producer's format.
    pub fn send_readings(&self, readings: &[Reading]) -> Result<()> {
        match self.format {
            WireFormat::Protobuf => {
                for r in readings {
                    let bytes = MotorReading::from(r).encode_to_vec();
                    self.send_raw(Some(r.motor_id.as_str().as_bytes()), &bytes, Some(CONTENT_TYPE_READING))?;
                }
            }
            WireFormat::Json => {
                for r in readings {
                    let bytes = serde_json::to_vec(&reading_to_json(r))?;
                    self.send_raw(Some(r.motor_id.as_str().as_bytes()), &bytes, Some(CONTENT_TYPE_JSON))?;
                }
            }
            WireFormat::ProtobufBatch | WireFormat::JsonBatch => {
                let mut by_site: BTreeMap<&str, Vec<&Reading>> = BTreeMap::new();
                for r in readings {
                    by_site.entry(r.site_id.as_str()).or_default().push(r);
                }
                for (site, group) in by_site {
                    let (bytes, content_type) = if self.format == WireFormat::ProtobufBatch {
                        let batch =
                            MotorReadingBatch { readings: group.iter().map(|r| MotorReading::from(*r)).collect() };
                        (batch.encode_to_vec(), CONTENT_TYPE_BATCH)
                    } else {
                        (
                            serde_json::to_vec(&group.iter().map(|r| reading_to_json(r)).collect::<Vec<_>>())?,
                            CONTENT_TYPE_JSON,
                        )
                    };
                    self.send_raw(Some(site.as_bytes()), &bytes, Some(content_type))?;
                }
            }
        }
        Ok(())
    }

    /// Publishes one message as given (tests and the demo use it for deliberately bad input).
    pub fn send_raw(&self, key: Option<&[u8]>, payload: &[u8], content_type: Option<&str>) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(ct) = content_type {
            record = record.headers(OwnedHeaders::new().insert(Header { key: "content-type", value: Some(ct) }));
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((source, _)) => return Err(kafka("producing a telemetry message")(source)),
            }
        }
    }

    /// Messages handed to the client so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Waits until every message is delivered or failed; fails if any failed.
    pub fn flush(&self, timeout: Duration) -> Result<DeliveryReport> {
        self.producer.flush(timeout).map_err(kafka("flushing the telemetry producer"))?;
        let report =
            DeliveryReport { delivered: self.counts.delivered.load(Relaxed), failed: self.counts.failed.load(Relaxed) };
        if report.failed > 0 {
            let first = self.counts.first_error.lock().expect("not poisoned").clone().unwrap_or_default();
            return Err(WorkloadError::Undelivered { failed: report.failed, sent: self.sent(), first });
        }
        Ok(report)
    }
}
