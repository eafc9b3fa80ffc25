//! Waiting for input topics that do not exist yet. A node often starts before its topics (in
//! Kubernetes the pods come up before whoever creates them), and librdkafka looks again only
//! at its periodic metadata refresh (`topic.metadata.refresh.interval.ms`, 5 minutes by
//! default), so readings published meanwhile would wait that long.
//!
//! The consumer thread asks the brokers for each subscribed topic's metadata at start, every
//! second while any is missing, and again whenever the consumer reports an unknown topic (one
//! deleted while running). When a missing topic appears it subscribes again, which makes the
//! group assign its partitions at once. What is missing is published in
//! [`IngestMetrics::missing_topics`] (the node's `/readyz` and a gauge).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use crate::metrics::IngestMetrics;

/// How often missing topics are looked for.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long one metadata request may take (the consumer thread waits for it).
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);

/// What the consumer thread knows of its subscribed topics' existence.
pub(super) struct TopicWatch {
    topics: Vec<String>,
    /// The topics missing at the last check.
    missing: Vec<String>,
    /// When to check next; `None`: not until the consumer reports an unknown topic.
    next_check: Option<Instant>,
}

impl TopicWatch {
    /// A watch over `topics`, due at once.
    pub(super) fn new(topics: &[String]) -> Self {
        Self { topics: topics.to_vec(), missing: Vec::new(), next_check: Some(Instant::now()) }
    }

    /// The consumer reported an unknown topic: check at the next chance.
    pub(super) fn check_soon(&mut self) {
        self.next_check = Some(Instant::now());
    }

    /// Checks every subscribed topic if a check is due at `now`; subscribes again if a
    /// missing one appeared.
    pub(super) fn check_if_due<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        metrics: &IngestMetrics,
        now: Instant,
    ) {
        if self.next_check.is_none_or(|at| now < at) {
            return;
        }
        self.next_check = Some(now + CHECK_EVERY);
        let mut missing = Vec::new();
        for topic in &self.topics {
            match exists(consumer, topic) {
                Ok(true) => {}
                Ok(false) => missing.push(topic.clone()),
                Err(e) => {
                    // The brokers did not answer: nothing is known; look again in a second.
                    tracing::debug!(topic, error = %e, "metadata request failed");
                    return;
                }
            }
        }
        for topic in missing.iter().filter(|t| !self.missing.contains(t)) {
            tracing::warn!(
                topic,
                "input topic does not exist on the brokers: waiting for it, checking every second (or set \
                 [ingest.create_topics] for the node to create it)"
            );
        }
        let appeared: Vec<&String> = self.missing.iter().filter(|t| !missing.contains(t)).collect();
        if !appeared.is_empty() {
            let refs: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            match consumer.subscribe(&refs) {
                Ok(()) => tracing::info!(topics = ?appeared, "input topics exist now; subscribed again"),
                Err(e) => {
                    tracing::warn!(error = %e, "subscribing again failed; retrying in a second");
                    return; // still counted missing, so tried again
                }
            }
        }
        if missing.is_empty() {
            self.next_check = None;
        }
        *metrics.missing_topics.lock().unwrap_or_else(|p| p.into_inner()) = missing.clone();
        self.missing = missing;
    }
}

/// Whether the brokers know `topic` (with at least one partition).
fn exists<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> rdkafka::error::KafkaResult<bool> {
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    Ok(metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
}
