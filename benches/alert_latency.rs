//! Alert latency under load, and after a rebalance (issue 25, point 5).
//!
//! On librdkafka's mock cluster, with gateway batches (`MotorReadingBatch` messages of
//! `--per-message` motors' readings, the way plant gateways publish) and the node's detection
//! as shipped (the default rules, the judges) plus one probe query:
//!
//! 1. **Burst.** A backlog of `--backlog-steps` time steps of every motor is produced first
//!    and a node (ingest + detection stage) drains it: its rate from the first message until
//!    the stage has taken every reading in. (The mock keeps only a few MB per partition, and a
//!    gateway's messages share its partition: keep the backlog under ~1 MB per gateway.)
//! 2. **Sustained maximum.** A producer thread publishes live readings (event time = now) at
//!    the burst rate for `--probe-seconds` (by default as long as the run under load: a 10 s
//!    probe overstated what the node sustains for 40 s, so the load ran at saturation); what
//!    the node keeps taking in after a 5 s warm-up, beside the producer on the same cores (at
//!    most the offered rate), is its measured maximum.
//! 3. **Under load.** A fresh topic and node, live readings at `--load` × that maximum for
//!    `--seconds`. Halfway, a second node joins the consumer group, so partitions move
//!    (cooperative-sticky) mid-stream.
//!
//! The probe query alerts on every closed 1 s window of every 10th motor (their current
//! alternates 100 A / 0 A by second; the others hold ~10 A). Each probe alert's latency is its
//! arrival on the alerts topic minus the moment the window closed (`emitted_at_ms`), reported
//! as p50 / p99 / max for windows closed in steady state (after the warm-up, before the join)
//! and in the 20 s after the join; "window end" adds the wait from the window's end (event
//! time) to its close: `allowed_lateness` (the shipped 2 s) and any lag.
//!
//! Checkpoints are off (the node's state store is not part of this bench).
//! `ALERT_LATENCY_KAFKA_DEBUG=cgrp,fetch` (with `RUST_LOG=librdkafka=debug`) passes librdkafka's
//! debug contexts to the nodes' consumers.
//!
//! The mock cluster keeps at most 5 MB or 100,000 messages of a partition: the defaults (48
//! partitions, 50 gateways of 20 motors) keep the ~10 s a rebalance leaves partitions unread
//! within that at these rates; fewer partitions lose the oldest offsets before the new owner
//! reads them (counted as skipped).
//!
//! `cargo bench --bench alert_latency -- [--motors 1000] [--partitions 48] [--per-message 20]
//! [--backlog-steps 100] [--probe-seconds SECONDS] [--load 0.8] [--seconds 40]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rdkafka::Message as _;
use rdkafka::consumer::BaseConsumer;
use tessera_core::now_ms;
use tessera_node::detect::DetectConfig;
use tessera_stream::AlertEvent;
use tessera_suite::bench_history::{Better, record};
use tessera_suite::gateway_node::{GatewayNode as Node, create_topics, mock_group_settings, publish_step};
use tessera_suite::{alerts_reader, percentile};
use tessera_workload::embedded::EmbeddedKafka;
use tessera_workload::producer::{TelemetryProducer, WireFormat};

/// Alerts on every closed 1 s window of a probe motor: its current is 100 A in even seconds
/// and 0 A in odd ones, so its alert opens and closes by turns.
const PROBE: &str = "CREATE CONTINUOUS QUERY probe WITH (open_above = 50, close_below = 50) AS
  SELECT motor_id, window_start, count(*) AS n, avg(current_a) AS score
  FROM TUMBLE(telemetry, ts, INTERVAL '1 second')
  GROUP BY motor_id, window_start";

/// Latencies of windows closed this long after the first reading are left out (group join,
/// first windows).
const WARM_UP: Duration = Duration::from_secs(5);
/// The span after the second node joins that counts as "after the rebalance" (on the mock
/// cluster the join takes ~5 s and the new node has caught up ~15 s after it).
const AFTER_JOIN: Duration = Duration::from_secs(20);

/// The default rules and judges, and the probe query.
fn detect_config(run: &str) -> DetectConfig {
    tessera_suite::gateway_node::detect_config(run, &[PROBE])
}

struct Args {
    motors: usize,
    partitions: i32,
    per_message: usize,
    backlog_steps: u64,
    load: f64,
    seconds: u64,
    /// How long the sustained maximum is measured; by default as long as the run under load,
    /// so that it is what the node sustains for that long.
    probe_seconds: Option<u64>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        motors: 1000,
        partitions: 48,
        per_message: 20,
        backlog_steps: 100,
        load: 0.8,
        seconds: 40,
        probe_seconds: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--motors" => a.motors = value()?.parse()?,
            "--partitions" => a.partitions = value()?.parse()?,
            "--per-message" => a.per_message = value()?.parse::<usize>()?.max(1),
            "--backlog-steps" => a.backlog_steps = value()?.parse()?,
            "--load" => a.load = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--probe-seconds" => a.probe_seconds = Some(value()?.parse()?),
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// librdkafka settings of the nodes' consumers: the mock cluster's group settings, and the
/// debug contexts of `ALERT_LATENCY_KAFKA_DEBUG`.
fn node_kafka() -> Vec<(String, String)> {
    mock_group_settings()
        .into_iter()
        .chain(std::env::var("ALERT_LATENCY_KAFKA_DEBUG").map(|d| ("debug".to_string(), d)))
        .collect()
}

fn start_node(brokers: &str, topic: &str, group: &str, detect: &DetectConfig) -> Result<Node> {
    Node::start(brokers, topic, group, detect, &node_kafka())
}

/// The node's rate draining a backlog, readings/s.
fn maximum(kafka: &EmbeddedKafka, a: &Args) -> Result<f64> {
    let brokers = kafka.bootstrap_servers();
    create_topics(kafka, "burst", a.partitions)?;
    let producer = TelemetryProducer::new(&brokers, "telemetry-burst", WireFormat::ProtobufBatch, &Default::default())?;
    // 100 steps per second of event time, ending now.
    let start_ms = now_ms() - a.backlog_steps as i64 * 10;
    let mut total = 0;
    for step in 0..a.backlog_steps {
        total += publish_step(&producer, a.motors, a.per_message, start_ms + step as i64 * 10, step)?;
    }
    producer.flush(Duration::from_secs(120))?;
    let node = start_node(&brokers, "telemetry-burst", "burst", &detect_config("burst"))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    let mut last_print = Instant::now();
    while node.rows_in() < total {
        if first.is_none() && node.ingest.metrics().snapshot().messages > 0 {
            first = Some(Instant::now());
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            let s = node.ingest.metrics().snapshot();
            eprintln!(
                "  {} messages, {} readings accepted, {} rejected; the stage took {} of {total}",
                s.messages,
                s.readings_accepted,
                s.readings_rejected,
                node.rows_in()
            );
        }
        anyhow::ensure!(Instant::now() < deadline, "the backlog was not drained in 10 minutes");
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = first.context("no message consumed")?.elapsed().as_secs_f64();
    node.stop()?;
    let rate = total as f64 / secs;
    println!("burst: {total} readings of {} motors drained in {secs:.2} s: {rate:.0} readings/s", a.motors);
    Ok(rate)
}

/// One probe alert: when its window closed and when it reached the alerts topic (ms).
struct Sample {
    emitted_ms: i64,
    window_end_ms: i64,
    arrived_ms: i64,
}

fn read_alerts(alerts: &BaseConsumer, wait: Duration, samples: &mut Vec<Sample>) -> Result<()> {
    while let Some(m) = alerts.poll(wait) {
        let m = m?;
        let arrived_ms = now_ms();
        let Some(p) = m.payload() else { continue };
        let e: AlertEvent = serde_json::from_slice(p)?;
        if e.query == "probe" {
            samples.push(Sample { emitted_ms: e.emitted_at_ms, window_end_ms: e.window_end_ms, arrived_ms });
        }
    }
    Ok(())
}

fn percentiles(v: &[i64]) -> String {
    match (percentile(v, 0.5), percentile(v, 0.99), v.last()) {
        (Some(p50), Some(p99), Some(max)) => format!("p50 {p50} ms, p99 {p99} ms, max {max} ms ({} alerts)", v.len()),
        _ => "no alerts".into(),
    }
}

/// What a live run saw.
struct Live {
    samples: Vec<Sample>,
    /// Readings per second the producer published.
    offered: f64,
    /// Readings per second the stages took in, from the warm-up's end to the run's end.
    taken: f64,
    started_ms: i64,
    /// When the second node joined (`i64::MAX`: none joined).
    joined_ms: i64,
}

/// A live run on topic `telemetry-{run}`: a producer publishes readings with event time now at
/// `rate` readings/s for `seconds`; with `join`, a second node joins the group halfway.
fn live(kafka: &EmbeddedKafka, a: &Args, run: &str, rate: f64, seconds: u64, join: bool) -> Result<Live> {
    let brokers = kafka.bootstrap_servers();
    let topic = format!("telemetry-{run}");
    create_topics(kafka, run, a.partitions)?;
    let detect = detect_config(run);
    let alerts = alerts_reader(&brokers, &format!("alerts-reader-{run}"), &detect.alerts_topic)?;

    let first_node = start_node(&brokers, &topic, run, &detect)?;
    let steps_per_s = rate / a.motors as f64;
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let started_ms = now_ms();
    let producer = {
        let (stop, produced, brokers, topic) = (stop.clone(), produced.clone(), brokers.clone(), topic.clone());
        let (motors, per_message) = (a.motors, a.per_message);
        std::thread::Builder::new().name("load".into()).spawn(move || -> Result<()> {
            let producer = TelemetryProducer::new(&brokers, &topic, WireFormat::ProtobufBatch, &Default::default())?;
            let t0 = Instant::now();
            let mut step = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (t0.elapsed().as_secs_f64() * steps_per_s) as u64;
                while step < due && !stop.load(Ordering::Relaxed) {
                    let t_ms = started_ms + (step as f64 * 1000.0 / steps_per_s) as i64;
                    produced.fetch_add(publish_step(&producer, motors, per_message, t_ms, step)?, Ordering::Relaxed);
                    step += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            producer.flush(Duration::from_secs(30))?;
            Ok(())
        })?
    };
    let mut samples = Vec::new();
    let t0 = Instant::now();
    let mut second_node: Option<Node> = None;
    let mut joined_ms = i64::MAX;
    let mut taken_at_warm: Option<(Instant, u64)> = None;
    let taken = |first: &Node, second: &Option<Node>| first.rows_in() + second.as_ref().map_or(0, Node::rows_in);
    let mut next_print = Duration::from_secs(5);
    while t0.elapsed() < Duration::from_secs(seconds) {
        read_alerts(&alerts, Duration::from_millis(5), &mut samples)?;
        if t0.elapsed() >= next_print {
            next_print += Duration::from_secs(5);
            let ingest = |n: &Node| {
                let s = n.ingest.metrics().snapshot();
                format!(
                    "{} ({} consumed, {} stale, {} pauses, {} rebalances)",
                    n.rows_in(),
                    s.messages,
                    s.stale_dropped,
                    s.pauses,
                    s.rebalances
                )
            };
            println!(
                "  {:>4.1} s: produced {}, taken in by the first node {}, by the second {}",
                t0.elapsed().as_secs_f64(),
                produced.load(Ordering::Relaxed),
                ingest(&first_node),
                second_node.as_ref().map_or("-".into(), ingest)
            );
        }
        if taken_at_warm.is_none() && t0.elapsed() >= WARM_UP {
            taken_at_warm = Some((Instant::now(), taken(&first_node, &second_node)));
        }
        if join && second_node.is_none() && t0.elapsed() >= Duration::from_secs(seconds / 2) {
            joined_ms = now_ms();
            second_node = Some(start_node(&brokers, &topic, run, &detect)?);
            println!("  a second node joined at {:.1} s", t0.elapsed().as_secs_f64());
        }
    }
    let (warm_at, warm_taken) = taken_at_warm.context("the run is shorter than its warm-up")?;
    let taken_rate = (taken(&first_node, &second_node) - warm_taken) as f64 / warm_at.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let offered = produced.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    producer.join().map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    let drain = Instant::now() + Duration::from_secs(3);
    while Instant::now() < drain {
        read_alerts(&alerts, Duration::from_millis(20), &mut samples)?;
    }
    first_node.stop()?;
    if let Some(n) = second_node {
        n.stop()?;
    }
    Ok(Live { samples, offered, taken: taken_rate, started_ms, joined_ms })
}

/// `latency` of the samples whose window closed in `[from, to)`, sorted.
fn latencies(live: &Live, from: i64, to: i64, latency: impl Fn(&Sample) -> i64) -> Vec<i64> {
    let mut v: Vec<i64> =
        live.samples.iter().filter(|s| s.emitted_ms >= from && s.emitted_ms < to).map(latency).collect();
    v.sort_unstable();
    v
}

fn main() -> Result<()> {
    // RUST_LOG=info shows the nodes' rebalances.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let a = args()?;
    let kafka = EmbeddedKafka::start(3)?;
    let burst = maximum(&kafka, &a)?;
    // The maximum beside a producer: offered the backlog's rate, what the node keeps taking in.
    let over = live(&kafka, &a, "max", burst, a.probe_seconds.unwrap_or(a.seconds), false)?;
    // Taking in more than was offered is catching up the warm-up's lag: the node kept pace, and
    // the offered rate is what it is known to sustain.
    let max = over.taken.min(over.offered);
    println!(
        "sustained maximum beside the producer: offered {:.0} readings/s, taken in {max:.0} readings/s",
        over.offered
    );
    record("alert_latency", "sustained maximum, gateway batches", max, "readings/s", Better::Higher);

    let run = live(&kafka, &a, "load", a.load * max, a.seconds, true)?;
    println!(
        "under load: offered {:.0} readings/s ({:.0} % of the sustained maximum) for {} s, taken in {:.0} readings/s",
        run.offered,
        100.0 * run.offered / max,
        a.seconds,
        run.taken
    );
    if run.taken < 0.97 * run.offered {
        println!("the node fell behind the offered load: its latencies include a growing lag (saturated)");
    }
    let warm_ms = run.started_ms + WARM_UP.as_millis() as i64;
    let after_ms = run.joined_ms.saturating_add(AFTER_JOIN.as_millis() as i64);
    let close = |s: &Sample| s.arrived_ms - s.emitted_ms;
    let end = |s: &Sample| s.arrived_ms - s.window_end_ms;
    for (phase, from, to) in [("steady", warm_ms, run.joined_ms), ("20 s after the join", run.joined_ms, after_ms)] {
        println!("{phase}, window close -> alerts topic: {}", percentiles(&latencies(&run, from, to, close)));
        println!("{phase}, window end (event time) -> alerts topic: {}", percentiles(&latencies(&run, from, to, end)));
    }
    if let Some(p) = percentile(&latencies(&run, warm_ms, run.joined_ms, close), 0.99) {
        record("alert_latency", "close to alert p99, steady", p as f64, "ms", Better::Lower);
    }
    if let Some(p) = percentile(&latencies(&run, run.joined_ms, after_ms, close), 0.99) {
        record("alert_latency", "close to alert p99, after a join", p as f64, "ms", Better::Lower);
    }
    Ok(())
}
