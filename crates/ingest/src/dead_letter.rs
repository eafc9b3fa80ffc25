//! The dead-letter path: rejected messages go, byte for byte, to the dead-letter topic, with
//! their original key and headers plus Tessera's reason headers. The source offset is not
//! committed until the broker has confirmed the dead letter.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::IngestMetrics;
use crate::offsets::{Halt, OffsetTracker};
use crate::{IngestConfig, IngestError, Result};

/// Names of the headers Tessera adds to a dead letter (next to the original headers).
pub mod headers {
    /// The [`RejectReason::code`](tessera_core::RejectReason::code) of the (first) rejection.
    pub const REASON: &str = "tessera.dlq.reason";
    /// Human-readable explanation; for a batch, one line per rejected reading.
    pub const DETAIL: &str = "tessera.dlq.detail";
    /// For a batch message whose valid readings were ingested: the indices of the rejected
    /// readings, comma-separated. Absent when the whole message was rejected.
    pub const REJECTED_INDICES: &str = "tessera.dlq.rejected-indices";
    /// The topic the message was consumed from.
    pub const SOURCE_TOPIC: &str = "tessera.dlq.source-topic";
    /// Its partition, decimal.
    pub const SOURCE_PARTITION: &str = "tessera.dlq.source-partition";
    /// Its offset, decimal.
    pub const SOURCE_OFFSET: &str = "tessera.dlq.source-offset";
}

/// A rejected message as the decoder sees it.
pub(crate) struct Rejected<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: &'a [u8],
    pub(crate) headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pub(crate) reason_code: &'static str,
    pub(crate) detail: String,
    pub(crate) rejected_indices: Option<String>,
}

struct DeliveryContext {
    tracker: Arc<OffsetTracker>,
    metrics: Arc<IngestMetrics>,
    topic: String,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, chunk: Box<u64>) {
        match result {
            Ok(_) => {
                self.metrics.dead_letters_sent.fetch_add(1, Relaxed);
                self.tracker.release(&[*chunk]);
            }
            Err((e, _)) => {
                tracing::error!(topic = %self.topic, error = %e, "dead letter not delivered; ingest stops");
                self.tracker.fail(Halt::DeadLetter(e.clone()));
            }
        }
    }
}

/// Writes dead letters; delivery confirmations release the chunk's hold.
pub(crate) struct DeadLetterWriter {
    producer: ThreadedProducer<DeliveryContext>,
    topic: String,
    tracker: Arc<OffsetTracker>,
}

impl DeadLetterWriter {
    pub(crate) fn new(config: &IngestConfig, tracker: Arc<OffsetTracker>, metrics: Arc<IngestMetrics>) -> Result<Self> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        for (k, v) in &config.kafka {
            if !CONSUMER_ONLY.contains(&k.as_str()) {
                client.set(k, v);
            }
        }
        let context = DeliveryContext { tracker: tracker.clone(), metrics, topic: config.dead_letter_topic.clone() };
        let producer = client.create_with_context(context)?;
        Ok(Self { producer, topic: config.dead_letter_topic.clone(), tracker })
    }

    /// Sends one dead letter for chunk `chunk`, holding the chunk until it is delivered.
    pub(crate) fn send(&self, msg: Rejected<'_>, chunk: u64) -> Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(msg.headers.len() + 6);
        for (key, value) in &msg.headers {
            headers = headers.insert(Header { key, value: *value });
        }
        let partition = msg.partition.to_string();
        let offset = msg.offset.to_string();
        headers = headers
            .insert(Header { key: headers::REASON, value: Some(msg.reason_code) })
            .insert(Header { key: headers::DETAIL, value: Some(&msg.detail) })
            .insert(Header { key: headers::SOURCE_TOPIC, value: Some(msg.topic) })
            .insert(Header { key: headers::SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: headers::SOURCE_OFFSET, value: Some(&offset) });
        if let Some(indices) = &msg.rejected_indices {
            headers = headers.insert(Header { key: headers::REJECTED_INDICES, value: Some(indices) });
        }
        let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(chunk)).payload(msg.payload).headers(headers);
        if let Some(key) = msg.key {
            record = record.key(key);
        }
        self.tracker.hold(chunk);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    self.tracker.fail(Halt::DeadLetter(e.clone()));
                    return Err(IngestError::DeadLetter { topic: self.topic.clone(), source: e });
                }
            }
        }
    }

    /// Waits for outstanding dead letters.
    pub(crate) fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "dead-letter producer flush");
        }
    }
}

/// librdkafka settings that only a consumer understands; not passed to the producer.
const CONSUMER_ONLY: [&str; 6] = [
    "auto.offset.reset",
    "session.timeout.ms",
    "max.poll.interval.ms",
    "heartbeat.interval.ms",
    "queued.max.messages.kbytes",
    "fetch.max.bytes",
];
