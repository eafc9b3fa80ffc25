//! The node's throughput against the number of nodes in one consumer group (issue 25, point 4):
//! 1, 2, 3 … whole nodes (ingest, the default rules and judges, alerts; checkpoints off) in
//! one process on librdkafka's mock cluster, draining the same backlog of gateway batches
//! (`MotorReadingBatch` messages of `--per-message` motors). The nodes start together, so the
//! group forms once; a rate runs from the first message consumed until the stages have taken
//! every reading in (into a window, or onto the late path: the backlog is read partition by
//! partition, so some partitions run ahead of others in event time; their count is shown).
//!
//! Beside each rate, the CPU of each kind of thread over the drain (from `/proc/self/task`):
//! where the cores went. All nodes share this machine's cores, so more nodes add consumers,
//! decoders and stages but no cores: the curve says what a node costs, not what a cluster of
//! machines would do.
//!
//! Each motor reads every `--step-ms` of event time (1 s: the windows close and the judges judge
//! as they do at 1 Hz; a backlog packed 100 steps to the second, as alert_latency's burst is,
//! measured about twice the rate, as the stage then updates a window per 1,000 readings).
//!
//! The mock cluster keeps at most 5 MB or 100,000 messages of a partition and drops the oldest
//! beyond (the progress lines count them as offsets skipped; the drain then never ends): the
//! defaults (10,000 motors in 500 gateways, 300 steps, 192 partitions) keep at most ~3 MB in
//! one (a partition gets up to ~7 gateways); 600 steps did not fit.
//!
//! `cargo bench --bench node_scaling -- [--motors 10000] [--partitions 192] [--per-message 20] [--steps 300] [--step-ms 1000] [--nodes 1,2,3]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tessera_core::now_ms;
use tessera_suite::bench_history::{Better, record};
use tessera_suite::gateway_node::{GatewayNode, create_topics, detect_config, mock_group_settings, publish_step};
use tessera_workload::embedded::EmbeddedKafka;
use tessera_workload::producer::{TelemetryProducer, WireFormat};

const BENCH: &str = "node_scaling";

struct Args {
    motors: usize,
    partitions: i32,
    per_message: usize,
    steps: u64,
    /// Event time between two readings of a motor, ms.
    step_ms: i64,
    nodes: Vec<usize>,
}

fn args() -> Result<Args> {
    let mut a =
        Args { motors: 10_000, partitions: 192, per_message: 20, steps: 300, step_ms: 1000, nodes: vec![1, 2, 3] };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--motors" => a.motors = value()?.parse()?,
            "--partitions" => a.partitions = value()?.parse()?,
            "--per-message" => a.per_message = value()?.parse::<usize>()?.max(1),
            "--steps" => a.steps = value()?.parse()?,
            "--step-ms" => a.step_ms = value()?.parse()?,
            "--nodes" => a.nodes = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    if a.nodes.is_empty() || a.nodes.contains(&0) {
        bail!("--nodes: a list of node counts, each at least 1");
    }
    Ok(a)
}

/// CPU seconds of this process's threads by kind (the thread's name without its digits:
/// `rdk:broker1` and `rdk:broker2` are both `rdk:broker`).
fn cpu_by_thread_kind() -> BTreeMap<String, f64> {
    let ticks = 100.0; // USER_HZ on Linux
    let mut kinds = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return kinds };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // pid (comm) state … ; utime and stime are the 14th and 15th fields.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name: String = stat[open + 1..close].chars().filter(|c| !c.is_ascii_digit()).collect();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let cpu = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        *kinds.entry(name).or_insert(0.0) += (cpu(11) + cpu(12)) / ticks;
    }
    kinds
}

/// What one drain measured.
struct Drain {
    readings: u64,
    /// Of them, sent to the late path.
    late: u64,
    seconds: f64,
    /// CPU seconds by thread kind over the drain.
    cpu: BTreeMap<String, f64>,
}

/// `nodes` nodes in one group drain a backlog of every motor's `steps` readings.
fn drain(kafka: &EmbeddedKafka, a: &Args, nodes: usize) -> Result<Drain> {
    let brokers = kafka.bootstrap_servers();
    let run = format!("scale{nodes}");
    let topic = format!("telemetry-{run}");
    create_topics(kafka, &run, a.partitions)?;
    let producer = TelemetryProducer::new(&brokers, &topic, WireFormat::ProtobufBatch, &Default::default())?;
    // A reading of each motor every `step_ms` of event time, ending now.
    let start_ms = now_ms() - a.steps as i64 * a.step_ms;
    let mut total = 0;
    for step in 0..a.steps {
        total += publish_step(&producer, a.motors, a.per_message, start_ms + step as i64 * a.step_ms, step)?;
    }
    producer.flush(Duration::from_secs(120))?;
    drop(producer);
    let detect = detect_config(&run, &[]);
    let kafka_settings = mock_group_settings();
    let group: Vec<GatewayNode> = (0..nodes)
        .map(|_| GatewayNode::start(&brokers, &topic, &run, &detect, &kafka_settings))
        .collect::<Result<_>>()?;
    let taken = || group.iter().map(GatewayNode::rows_in).sum::<u64>();
    let consumed = || group.iter().map(|n| n.ingest.metrics().snapshot().messages).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(600);
    while consumed() == 0 {
        anyhow::ensure!(Instant::now() < deadline, "no message consumed in 10 minutes");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (first, cpu_before) = (Instant::now(), cpu_by_thread_kind());
    let mut next_print = first + Duration::from_secs(5);
    while taken() < total {
        anyhow::ensure!(Instant::now() < deadline, "the backlog was not drained in 10 minutes");
        if Instant::now() >= next_print {
            next_print += Duration::from_secs(5);
            let ingest: Vec<_> = group.iter().map(|n| n.ingest.metrics().snapshot()).collect();
            let accepted: u64 = ingest.iter().map(|s| s.readings_accepted).sum();
            let skipped: u64 = ingest.iter().map(|s| s.offsets_skipped).sum();
            eprintln!(
                "  {} messages consumed ({skipped} offsets skipped: the mock dropped them), {accepted} readings accepted; \
                 the stages took {} of {total}",
                consumed(),
                taken()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = first.elapsed().as_secs_f64();
    let late = group.iter().map(GatewayNode::rows_late).sum();
    let mut cpu = cpu_by_thread_kind();
    for (kind, before) in cpu_before {
        *cpu.entry(kind).or_insert(0.0) -= before;
    }
    for node in group {
        node.stop()?;
    }
    Ok(Drain { readings: total, late, seconds, cpu })
}

fn main() -> Result<()> {
    let a = args()?;
    let kafka = EmbeddedKafka::start(3)?;
    println!(
        "{} motors in gateway batches of {}, {} steps {} ms apart, {} partitions; nodes {:?}; {} cores",
        a.motors,
        a.per_message,
        a.steps,
        a.step_ms,
        a.partitions,
        a.nodes,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut one = None;
    for &nodes in &a.nodes {
        let d = drain(&kafka, &a, nodes)?;
        let rate = d.readings as f64 / d.seconds;
        let base = *one.get_or_insert(rate);
        println!(
            "{nodes} node(s): {} readings ({} late) in {:.2} s = {rate:.0} readings/s ({:.2}× the first row)",
            d.readings,
            d.late,
            d.seconds,
            rate / base
        );
        let mut busiest: Vec<(&String, &f64)> = d.cpu.iter().filter(|(_, s)| **s >= 0.05 * d.seconds).collect();
        busiest.sort_by(|x, y| y.1.total_cmp(x.1));
        let total_cpu: f64 = d.cpu.values().sum();
        println!(
            "  CPU {:.2} s ({:.0} % of a core over the drain); by thread: {}",
            total_cpu,
            100.0 * total_cpu / d.seconds,
            busiest.iter().map(|(k, s)| format!("{k} {:.0} %", 100.0 * **s / d.seconds)).collect::<Vec<_>>().join(", ")
        );
        record(BENCH, &format!("readings/s, {nodes} nodes"), rate, "readings/s", Better::Higher);
    }
    Ok(())
}
