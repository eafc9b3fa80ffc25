//! End-to-end ingest bench: produce N readings (one protobuf message each) to a 6-partition
//! topic, then, in the same run and alternating, time (a) a bare rdkafka consumer that only
//! reads every message and (b) Tessera's ingest to acknowledged Arrow batches; print both
//! rates and their ratio. Rates are measured from the first message consumed to the last, so
//! the consumer-group join (the same for both) is not counted.
//!
//! The broker is a Tansu process (in-memory storage) by default. `--broker mock` uses
//! librdkafka's mock cluster instead, which keeps only a few MB per partition: fine up to
//! ~100 k readings, not for 10 M.
//!
//! `cargo bench --bench ingest_e2e -- [--readings 10000000] [--partitions 6] [--rounds 2] [--broker tansu|mock]`

use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tessera_ingest::{Encoding, Ingest, IngestConfig, TopicConfig};
use tessera_node::topics::ensure_topics;
use tessera_suite::{TansuBroker, producer, publish, test_fleet};
use tessera_workload::embedded::EmbeddedKafka;
use tessera_workload::producer::WireFormat;

const TOPIC: &str = "bench-telemetry";

struct Args {
    readings: u64,
    partitions: i32,
    rounds: u32,
    broker: String,
}

fn args() -> Result<Args> {
    let mut a = Args { readings: 10_000_000, partitions: 6, rounds: 2, broker: "tansu".into() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--readings" => a.readings = it.next().context("--readings N")?.parse()?,
            "--partitions" => a.partitions = it.next().context("--partitions N")?.parse()?,
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--broker" => a.broker = it.next().context("--broker mock|tansu")?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// Seconds from the first message to the last, and messages read.
fn bare_consumer(brokers: &str, group: &str, expected: u64) -> Result<(f64, u64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // The same prefetch settings as Tessera's consumer (crates/ingest/src/pipeline.rs).
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    let (mut n, mut bytes, mut first) = (0u64, 0u64, None);
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
            first.get_or_insert_with(Instant::now);
            bytes += m.payload_len() as u64;
            n += 1;
        }
    }
    let secs = first.expect("read something").elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok((secs, n))
}

/// Seconds from the ingest's first consumed message to the last acknowledged row, and rows.
fn tessera_ingest(brokers: &str, group: &str, expected: u64) -> Result<(f64, u64)> {
    let config = IngestConfig {
        brokers: brokers.into(),
        group_id: group.into(),
        topics: vec![TopicConfig { name: TOPIC.into(), encoding: Encoding::ProtobufReading }],
        dead_letter_topic: "bench-dead-letters".into(),
        ..Default::default()
    };
    let (tx, rx) = sync_channel(64);
    let ingest = Ingest::start(config, tx)?;
    let mut rows = 0u64;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while rows < expected {
        if Instant::now() > deadline {
            bail!("ingest delivered {rows} of {expected}");
        }
        if first.is_none() && ingest.metrics().snapshot().messages > 0 {
            first = Some(Instant::now());
        }
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(b) => {
                first.get_or_insert_with(Instant::now);
                rows += b.ack().num_rows() as u64;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("ingest stopped: {:?}", ingest.stop().err()),
        }
    }
    let secs = first.expect("consumed something").elapsed().as_secs_f64();
    let stats = ingest.stop()?;
    eprintln!("ingest: {} batches, {} pauses, {} commits", stats.batches, stats.pauses, stats.commits);
    if stats.readings_rejected > 0 {
        bail!("{} readings were rejected", stats.readings_rejected);
    }
    Ok((secs, rows))
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
    let sent = publish(&mut test_fleet(motors, steps, 9), &producer(&brokers, TOPIC, WireFormat::Protobuf)?, None)?;
    let produce_s = started.elapsed().as_secs_f64();
    println!(
        "broker: {}, {} partitions; produced {} readings in {produce_s:.1}s ({:.0} msg/s)",
        args.broker,
        args.partitions,
        sent.readings,
        sent.readings as f64 / produce_s
    );

    let (mut best_bare, mut best_tessera) = (0f64, 0f64);
    for round in 0..args.rounds {
        let (secs, n) = bare_consumer(&brokers, &format!("bare-{round}"), sent.readings)?;
        let bare = n as f64 / secs;
        let (secs, n) = tessera_ingest(&brokers, &format!("tessera-{round}"), sent.readings)?;
        let tessera = n as f64 / secs;
        println!(
            "round {round}: bare consumer {bare:>10.0} msg/s | tessera ingest {tessera:>10.0} readings/s | ratio {:.3}",
            tessera / bare
        );
        best_bare = best_bare.max(bare);
        best_tessera = best_tessera.max(tessera);
    }
    println!(
        "best of {}: bare consumer {best_bare:.0} msg/s, tessera ingest {best_tessera:.0} readings/s, ratio {:.3} (goal >= 0.90)",
        args.rounds,
        best_tessera / best_bare
    );
    Ok(())
}
