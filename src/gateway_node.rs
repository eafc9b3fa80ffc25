//! A node's data path fed by plant gateways, for the benches that run whole nodes on
//! librdkafka's mock cluster (`alert_latency`, `node_scaling`): gateway batches of simulated
//! motors ([`publish_step`]), and an ingest with a detection stage on its own thread
//! ([`GatewayNode`]).

use std::sync::mpsc::sync_channel;

use anyhow::Result;
use prost::Message as _;
use tessera_core::{Channel, MotorId, Reading, SiteId};
use tessera_ingest::{Encoding, Ingest, IngestConfig, TopicConfig};
use tessera_node::detect::rules::DEFAULT_RULES;
use tessera_node::detect::{Detect, DetectConfig, build_engine};
use tessera_node::lifecycle::StageThread;
use tessera_proto::CONTENT_TYPE_BATCH;
use tessera_proto::telemetry::{MotorReading, MotorReadingBatch};
use tessera_stream::StreamEngine;
use tessera_workload::embedded::EmbeddedKafka;
use tessera_workload::producer::TelemetryProducer;

/// Motor `m`'s reading at event time `t_ms`: a healthy motor with a little noise, except that
/// every 10th motor (a probe) draws 100 A in even seconds and 0 A in odd ones.
pub fn reading(m: usize, t_ms: i64, sequence: u64) -> Reading {
    // A cheap deterministic wobble, so that baselines have a spread.
    let wobble = ((m as u64).wrapping_mul(2_654_435_761) ^ sequence.wrapping_mul(40_503)) % 1000;
    let noise = wobble as f64 / 1000.0 - 0.5;
    let current =
        if m.is_multiple_of(10) { if t_ms.div_euclid(1000) % 2 == 0 { 100.0 } else { 0.0 } } else { 10.0 + noise };
    let mut r = Reading {
        motor_id: MotorId::new(format!("m-{m:05}")).expect("motor id"),
        site_id: SiteId::new("site-a").expect("site id"),
        event_time_ms: t_ms,
        sequence,
        channels: [None; 7],
        extra: Default::default(),
    };
    r.set(Channel::CurrentA, Some(current));
    r.set(Channel::VoltageV, Some(400.0 + noise));
    r.set(Channel::TemperatureC, Some(60.0 + noise));
    r.set(Channel::VibrationXRms, Some(1.0 + noise / 10.0));
    r.set(Channel::VibrationYRms, Some(1.0 + noise / 10.0));
    r.set(Channel::VibrationZRms, Some(1.0 + noise / 10.0));
    r.set(Channel::SpeedRpm, Some(1500.0 + noise));
    r
}

/// Publishes one time step of every motor at `t_ms` as gateway batches (`MotorReadingBatch`
/// messages of `per_message` motors, keyed by gateway). Returns the readings.
pub fn publish_step(
    producer: &TelemetryProducer,
    motors: usize,
    per_message: usize,
    t_ms: i64,
    step: u64,
) -> Result<u64> {
    for (gateway, first) in (0..motors).step_by(per_message).enumerate() {
        let readings =
            (first..(first + per_message).min(motors)).map(|m| MotorReading::from(&reading(m, t_ms, step))).collect();
        let batch = MotorReadingBatch { readings };
        producer.send_raw(
            Some(format!("gw-{gateway}").as_bytes()),
            &batch.encode_to_vec(),
            Some(CONTENT_TYPE_BATCH),
        )?;
    }
    Ok(motors as u64)
}

/// The detection as shipped (the default rules and judges) plus `extra` queries, with topics
/// of their own for run `run` (see [`create_topics`]).
pub fn detect_config(run: &str, extra: &[&str]) -> DetectConfig {
    DetectConfig {
        queries: DEFAULT_RULES.iter().chain(extra).map(|s| s.to_string()).collect(),
        alerts_topic: format!("alerts-{run}"),
        late_topic: format!("late-{run}"),
        dead_letter_topic: format!("dlq-{run}"),
        ..Default::default()
    }
}

/// librdkafka settings for a node's consumer on the mock cluster. The mock holds a join to a
/// running group for the session timeout less 1 s (librdkafka's rdkafka_mock_cgrp.c): 6 s makes
/// its rebalance about as long as a broker's (group members rejoin within a heartbeat or so).
pub fn mock_group_settings() -> Vec<(String, String)> {
    [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "1000")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Run `run`'s topics: `telemetry-{run}` with `partitions`, and its alerts, late and
/// dead-letter topics.
pub fn create_topics(kafka: &EmbeddedKafka, run: &str, partitions: i32) -> Result<()> {
    kafka.create_topic(&format!("telemetry-{run}"), partitions)?;
    for t in ["alerts", "late", "dlq"] {
        kafka.create_topic(&format!("{t}-{run}"), 1)?;
    }
    Ok(())
}

/// An ingest and a detection stage on a thread: a node's data path (checkpoints off).
pub struct GatewayNode {
    /// The ingest, for its counters.
    pub ingest: Ingest,
    stage: Detect,
    thread: StageThread<StreamEngine>,
}

impl GatewayNode {
    /// Joins consumer group `group` on `topic` (gateway batches); `kafka` are librdkafka
    /// settings over the ingest's.
    pub fn start(
        brokers: &str,
        topic: &str,
        group: &str,
        detect: &DetectConfig,
        kafka: &[(String, String)],
    ) -> Result<GatewayNode> {
        let config = IngestConfig {
            brokers: brokers.into(),
            group_id: group.into(),
            topics: vec![TopicConfig { name: topic.into(), encoding: Encoding::ProtobufBatch }],
            dead_letter_topic: detect.dead_letter_topic.clone(),
            kafka: kafka.iter().cloned().collect(),
            ..Default::default()
        };
        let (tx, rx) = sync_channel(64);
        let ingest = Ingest::start(config, tx)?;
        let (stage, stage_loop) = Detect::prepare(build_engine(detect)?, detect, brokers, rx)?;
        let thread = StageThread::spawn(stage_loop)?;
        Ok(GatewayNode { ingest, stage, thread })
    }

    /// Readings the stage has taken in: into a window, or onto the late path (a backlog read
    /// partition by partition runs some partitions ahead of others in event time).
    pub fn rows_in(&self) -> u64 {
        self.stage.stats().engine.windows.iter().map(|w| w.1.rows_in + w.1.rows_late).max().unwrap_or(0)
    }

    /// Readings the stage sent to the late path.
    pub fn rows_late(&self) -> u64 {
        self.stage.stats().engine.windows.iter().map(|w| w.1.rows_late).max().unwrap_or(0)
    }

    /// Stops the ingest, then the stage.
    pub fn stop(self) -> Result<()> {
        self.ingest.stop()?;
        self.stage.request_stop();
        self.thread.join().map_err(|f| (*f).into_error())?;
        Ok(())
    }
}
