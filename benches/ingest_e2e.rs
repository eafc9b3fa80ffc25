//! End-to-end ingest bench: produce N readings (one protobuf message each) to a 6-partition
//! topic, then, in the same run and alternating, time (a) a bare rdkafka consumer that only
//! reads every message and (b) Tessera's ingest to acknowledged Arrow batches; print both
//! rates and their ratio, and the CPU each spent per message (getrusage of the whole process:
//! librdkafka's threads count for both; with `--broker mock` the in-process broker's too).
//! Rates and CPU are measured from the first message consumed to the last, so the
//! consumer-group join (the same for both) is not counted. With `TESSERA_BENCH_HISTORY` set,
//! the best round's figures are appended to that file (src/bench_history.rs).
//!
//! The broker is a Tansu process (in-memory storage) by default. `--broker mock` uses
//! librdkafka's mock cluster instead, which keeps only a few MB per partition: fine up to
//! ~100 k readings, not for 10 M.
//!
//! `--per-message N` publishes gateway batches instead: `MotorReadingBatch` messages of N
//! readings each (N consecutive motors of a time step, keyed by their gateway); the bare
//! consumer's figures are then per message of N readings, and the ratios per reading.
//!
//! `cargo bench --bench ingest_e2e -- [--readings 10000000] [--partitions 6] [--rounds 2] [--broker tansu|mock] [--per-message 1] [--kafka key=value]...`

use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tessera_ingest::{Encoding, Ingest, IngestConfig, TopicConfig};
use tessera_node::topics::ensure_topics;
use tessera_proto::CONTENT_TYPE_BATCH;
use tessera_proto::telemetry::{MotorReading, MotorReadingBatch};
use tessera_suite::bench_history::{Better, record};
use tessera_suite::reference::process_cpu_seconds;
use tessera_suite::{TansuBroker, producer, publish, test_fleet};
use tessera_workload::embedded::EmbeddedKafka;
use tessera_workload::producer::WireFormat;
use tessera_workload::simulate::Simulator;

const TOPIC: &str = "bench-telemetry";

struct Args {
    readings: u64,
    partitions: i32,
    rounds: u32,
    broker: String,
    per_message: usize,
    /// librdkafka settings for both consumers (`--kafka key=value`, repeatable).
    kafka: Vec<(String, String)>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        readings: 10_000_000,
        partitions: 6,
        rounds: 2,
        broker: "tansu".into(),
        per_message: 1,
        kafka: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--readings" => a.readings = it.next().context("--readings N")?.parse()?,
            "--partitions" => a.partitions = it.next().context("--partitions N")?.parse()?,
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--broker" => a.broker = it.next().context("--broker mock|tansu")?,
            "--per-message" => a.per_message = it.next().context("--per-message N")?.parse::<usize>()?.max(1),
            "--kafka" => {
                let kv = it.next().context("--kafka key=value")?;
                let (k, v) = kv.split_once('=').context("--kafka key=value")?;
                a.kafka.push((k.into(), v.into()));
            }
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// What one side measured, from its first message to its last.
struct Phase {
    secs: f64,
    messages: u64,
    /// CPU seconds of the whole process (user + system).
    cpu_secs: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.secs
    }

    /// CPU microseconds per message.
    fn cpu_us(&self) -> f64 {
        self.cpu_secs * 1e6 / self.messages as f64
    }
}

/// The bare consumer: polls every message and reads its length, nothing else.
fn bare_consumer(brokers: &str, group: &str, expected: u64, kafka: &[(String, String)]) -> Result<Phase> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // The same prefetch settings as Tessera's consumer (crates/ingest/src/pipeline/consumer.rs).
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.queue.backoff.ms", "10");
    for (k, v) in kafka {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&[TOPIC])?;
    let (mut n, mut bytes, mut first, mut cpu_at_first) = (0u64, 0u64, None, 0.0);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    while n < expected {
        if Instant::now() > deadline {
            bail!("bare consumer read {n} of {expected}");
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!("bare consumer: {n} of {expected}");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            if first.is_none() {
                (first, cpu_at_first) = (Some(Instant::now()), process_cpu_seconds());
            }
            bytes += m.payload_len() as u64;
            n += 1;
        }
    }
    let secs = first.expect("read something").elapsed().as_secs_f64();
    let cpu_secs = process_cpu_seconds() - cpu_at_first;
    std::hint::black_box(bytes);
    Ok(Phase { secs, messages: n, cpu_secs })
}

/// Tessera's ingest, from its first consumed message to the last acknowledged row.
fn tessera_ingest(
    brokers: &str,
    group: &str,
    expected: u64,
    encoding: Encoding,
    kafka: &[(String, String)],
) -> Result<Phase> {
    let config = IngestConfig {
        brokers: brokers.into(),
        group_id: group.into(),
        topics: vec![TopicConfig { name: TOPIC.into(), encoding }],
        dead_letter_topic: "bench-dead-letters".into(),
        kafka: kafka.iter().cloned().collect(),
        ..Default::default()
    };
    let (tx, rx) = sync_channel(64);
    let ingest = Ingest::start(config, tx)?;
    let mut rows = 0u64;
    let (mut first, mut cpu_at_first) = (None, 0.0);
    let deadline = Instant::now() + Duration::from_secs(600);
    while rows < expected {
        if Instant::now() > deadline {
            bail!("ingest delivered {rows} of {expected}");
        }
        if first.is_none() && ingest.metrics().snapshot().messages > 0 {
            (first, cpu_at_first) = (Some(Instant::now()), process_cpu_seconds());
        }
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(b) => {
                if first.is_none() {
                    (first, cpu_at_first) = (Some(Instant::now()), process_cpu_seconds());
                }
                rows += b.ack().num_rows() as u64;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("ingest stopped: {:?}", ingest.stop().err()),
        }
    }
    let secs = first.expect("consumed something").elapsed().as_secs_f64();
    let cpu_secs = process_cpu_seconds() - cpu_at_first;
    let stats = ingest.stop()?;
    eprintln!("ingest: {} batches, {} pauses, {} commits", stats.batches, stats.pauses, stats.commits);
    if stats.readings_rejected > 0 {
        bail!("{} readings were rejected", stats.readings_rejected);
    }
    Ok(Phase { secs, messages: rows, cpu_secs })
}

fn main() -> Result<()> {
    let args = args()?;
    let (_embedded, _tansu, brokers) = match args.broker.as_str() {
        "mock" => {
            let k = EmbeddedKafka::start(3)?;
            k.create_topic(TOPIC, args.partitions)?;
            k.create_topic("bench-dead-letters", 1)?;
            let b = k.bootstrap_servers();
            (Some(k), None, b)
        }
        "tansu" => {
            let t = TansuBroker::start()?;
            let b = t.bootstrap_servers();
            ensure_topics(&b, &[(TOPIC, args.partitions), ("bench-dead-letters", 1)])?;
            (None, Some(t), b)
        }
        other => bail!("--broker {other}: use mock or tansu"),
    };
    let motors = 1000u32;
    let steps = args.readings.div_ceil(u64::from(motors));
    let started = Instant::now();
    let mut fleet = test_fleet(motors, steps, 9);
    let (readings, messages, encoding) = if args.per_message == 1 {
        let sent = publish(&mut fleet, &producer(&brokers, TOPIC, WireFormat::Protobuf)?, None)?;
        (sent.readings, sent.readings, Encoding::ProtobufReading)
    } else {
        let (readings, messages) = publish_gateway_batches(&mut fleet, &brokers, args.per_message)?;
        (readings, messages, Encoding::ProtobufBatch)
    };
    let produce_s = started.elapsed().as_secs_f64();
    println!(
        "broker: {}, {} partitions; produced {readings} readings in {messages} messages in {produce_s:.1}s ({:.0} msg/s)",
        args.broker,
        args.partitions,
        messages as f64 / produce_s
    );
    let per = args.per_message as f64;

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let (mut best_bare, mut best_tessera): (Option<Phase>, Option<Phase>) = (None, None);
    for round in 0..args.rounds {
        let bare = bare_consumer(&brokers, &format!("bare-{round}"), messages, &args.kafka)?;
        let tessera = tessera_ingest(&brokers, &format!("tessera-{round}"), readings, encoding, &args.kafka)?;
        println!(
            "round {round}: bare consumer {:>10.0} msg/s, {:.2} us CPU/msg | tessera ingest {:>10.0} readings/s, {:.2} us CPU/reading | ratio {:.3}, CPU ratio {:.2} (per reading)",
            bare.rate(),
            bare.cpu_us(),
            tessera.rate(),
            tessera.cpu_us(),
            tessera.rate() / (bare.rate() * per),
            tessera.cpu_us() / (bare.cpu_us() / per)
        );
        if best_bare.as_ref().is_none_or(|b| bare.rate() > b.rate()) {
            best_bare = Some(bare);
        }
        if best_tessera.as_ref().is_none_or(|b| tessera.rate() > b.rate()) {
            best_tessera = Some(tessera);
        }
    }
    let (bare, tessera) = (best_bare.context("--rounds 0")?, best_tessera.context("--rounds 0")?);
    let (ratio, cpu_ratio) = (tessera.rate() / (bare.rate() * per), tessera.cpu_us() / (bare.cpu_us() / per));
    println!(
        "best of {}: bare consumer {:.0} msg/s ({:.2} us CPU/msg), tessera ingest {:.0} readings/s ({:.2} us CPU/reading), ratio {ratio:.3} (goal >= 0.90), CPU ratio {cpu_ratio:.2} (goal <= 1.25), {cores} cores",
        args.rounds,
        bare.rate(),
        bare.cpu_us(),
        tessera.rate(),
        tessera.cpu_us(),
    );
    record("ingest_e2e", "tessera readings/s", tessera.rate(), "readings/s", Better::Higher);
    record("ingest_e2e", "bare consumer msg/s", bare.rate(), "msg/s", Better::Higher);
    record("ingest_e2e", "ratio to bare consumer", ratio, "x", Better::Higher);
    record("ingest_e2e", "tessera CPU per reading", tessera.cpu_us(), "us", Better::Lower);
    record("ingest_e2e", "CPU per reading / bare CPU per reading", cpu_ratio, "x", Better::Lower);
    Ok(())
}

/// Publishes the fleet as gateway batches: each time step's readings cut into messages of
/// `per_message` consecutive motors, keyed by their gateway (`gw-<n>`). Returns readings and
/// messages sent.
fn publish_gateway_batches(fleet: &mut Simulator, brokers: &str, per_message: usize) -> Result<(u64, u64)> {
    let producer = producer(brokers, TOPIC, WireFormat::ProtobufBatch)?;
    let (mut readings, mut messages) = (0u64, 0u64);
    while let Some(step) = fleet.next_step() {
        for (gateway, chunk) in step.chunks(per_message).enumerate() {
            let batch = MotorReadingBatch { readings: chunk.iter().map(MotorReading::from).collect() };
            producer.send_raw(
                Some(format!("gw-{gateway}").as_bytes()),
                &batch.encode_to_vec(),
                Some(CONTENT_TYPE_BATCH),
            )?;
            readings += chunk.len() as u64;
            messages += 1;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok((readings, messages))
}
