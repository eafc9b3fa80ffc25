//! Tessera beside stream processors that consume Kafka themselves (issue 25 point 3): the same
//! topic of JSON readings on the same broker, read in turn by Tessera's ingest and detection
//! stage running the reference query (`tessera_suite::reference::QUERY`), then by each peer
//! computing the same query: Quix Streams, Bytewax and Pathway (benches/peers/*.py, from PyPI;
//! their venv is made by benches/peers/setup.sh).
//!
//! For each: readings per second and CPU per reading (getrusage), from the first message
//! processed to the last window counted, and the windows and z > 3 hits it found, which must
//! agree. Tessera and Quix Streams stop when every window but each motor's last has closed
//! (nothing later arrives to close those); Bytewax reads to the end of the topic and Pathway until
//! it has every reading, which closes every window. Tessera's CPU is the bench process's, which with `--broker mock` includes the
//! in-process broker; the peers' is their own process's.
//!
//! The mock cluster keeps at most 5 MB of a partition: 500,000 JSON readings need `--partitions 48`
//! there (at 6 the oldest are dropped and the run never ends).
//!
//! `cargo bench --bench kafka_peers -- [--readings 500000] [--motors 1000] [--partitions 6] [--broker tansu|mock] [--peers quix,bytewax,pathway]`
//! (`TESSERA_PEERS_PYTHON`: the peers' Python; default `~/.cache/tessera/venv-peers/bin/python`).

use std::collections::HashSet;
use std::process::Command;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use tessera_ingest::{Encoding, Ingest, IngestConfig, TopicConfig};
use tessera_node::detect::{Detect, DetectConfig, build_engine};
use tessera_node::topics::ensure_topics;
use tessera_suite::bench_history::{Better, record};
use tessera_suite::reference::{QUERY, count_hits, process_cpu_seconds};
use tessera_suite::{TansuBroker, producer, test_fleet};
use tessera_workload::embedded::EmbeddedKafka;
use tessera_workload::producer::WireFormat;

const TOPIC: &str = "peers-telemetry";

struct Args {
    readings: u64,
    motors: u32,
    partitions: i32,
    broker: String,
    peers: Vec<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        readings: 500_000,
        motors: 1000,
        partitions: 6,
        broker: "tansu".into(),
        peers: vec!["quix".into(), "bytewax".into(), "pathway".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--readings" => a.readings = it.next().context("--readings N")?.parse()?,
            "--motors" => a.motors = it.next().context("--motors N")?.parse()?,
            "--partitions" => a.partitions = it.next().context("--partitions N")?.parse()?,
            "--broker" => a.broker = it.next().context("--broker tansu|mock")?,
            "--peers" => {
                a.peers = it.next().context("--peers quix,bytewax,pathway")?.split(',').map(str::to_string).collect()
            }
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// What one engine measured and found.
#[derive(Debug)]
struct Run {
    engine: String,
    readings: u64,
    secs: f64,
    cpu_secs: f64,
    windows: u64,
    hits: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.readings as f64 / self.secs
    }

    fn cpu_us(&self) -> f64 {
        self.cpu_secs * 1e6 / self.readings as f64
    }
}

/// The topic's contents, as the checks need them.
struct Published {
    readings: u64,
    motors: u64,
    /// Distinct (motor, 10 s window) pairs.
    windows: u64,
}

fn publish(brokers: &str, motors: u32, readings: u64) -> Result<Published> {
    let producer = producer(brokers, TOPIC, WireFormat::Json)?;
    let mut fleet = test_fleet(motors, readings.div_ceil(u64::from(motors)), 25);
    let (mut sent, mut windows, mut ids) = (0u64, HashSet::new(), HashSet::new());
    while let Some(step) = fleet.next_step() {
        producer.send_readings(&step)?;
        for r in &step {
            windows.insert((r.motor_id.clone(), r.event_time_ms.div_euclid(10_000)));
            ids.insert(r.motor_id.clone());
        }
        sent += step.len() as u64;
    }
    producer.flush(Duration::from_secs(300))?;
    Ok(Published { readings: sent, motors: ids.len() as u64, windows: windows.len() as u64 })
}

/// Tessera's ingest and detection stage with the reference query alone (no judges, no
/// checkpoints), timed until every window but each motor's last has closed.
fn tessera(brokers: &str, published: &Published) -> Result<Run> {
    let detect = DetectConfig {
        queries: vec![QUERY.to_string()],
        allowed_lateness: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
        alerts_topic: "peers-alerts".into(),
        late_topic: "peers-late".into(),
        dead_letter_topic: "peers-detect-dlq".into(),
        data_quality: tessera_node::detect::DataQualityConfig { enabled: false, ..Default::default() },
        wear: tessera_node::detect::WearConfig { enabled: false, ..Default::default() },
        shift: tessera_node::detect::ShiftConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    let ingest_config = IngestConfig {
        brokers: brokers.into(),
        group_id: "peers-tessera".into(),
        topics: vec![TopicConfig { name: TOPIC.into(), encoding: Encoding::Json }],
        dead_letter_topic: "peers-dlq".into(),
        ..Default::default()
    };
    let engine = build_engine(&detect)?;
    let (tx, rx) = sync_channel(64);
    let ingest = Ingest::start(ingest_config, tx)?;
    let (stage, detect_loop) = Detect::prepare(engine, &detect, brokers, rx)?;
    let detect_thread = tessera_node::lifecycle::StageThread::spawn(detect_loop)?;
    let closed = || stage.stats().engine.windows.iter().map(|w| w.1.windows_closed).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(900);
    let (mut first, mut cpu0) = (None, 0.0);
    let (done, cpu1) = loop {
        if first.is_none() && ingest.metrics().snapshot().messages > 0 {
            (first, cpu0) = (Some(Instant::now()), process_cpu_seconds());
        }
        if closed() + published.motors >= published.windows {
            break (Instant::now(), process_cpu_seconds());
        }
        ensure!(Instant::now() < deadline, "tessera: {} of {} windows in 15 minutes", closed(), published.windows);
        std::thread::sleep(Duration::from_millis(2));
    };
    while closed() < published.windows {
        ensure!(Instant::now() < deadline, "tessera: the last windows did not close");
        std::thread::sleep(Duration::from_millis(50));
    }
    let readings = ingest.metrics().snapshot().readings_accepted;
    ingest.stop()?;
    stage.request_stop();
    let engine = detect_thread.join().map_err(|f| (*f).into_error())?;
    let (windows, hits) = tokio::runtime::Builder::new_current_thread().build()?.block_on(count_hits(&engine))?;
    let first = first.context("tessera consumed nothing")?;
    Ok(Run {
        engine: "tessera".into(),
        readings,
        secs: done.duration_since(first).as_secs_f64(),
        cpu_secs: cpu1 - cpu0,
        windows: windows as u64,
        hits: hits as u64,
    })
}

/// Creates `topic` with `retention.ms` set: Quix Streams reads it back (DescribeConfigs) to
/// configure its window state, and Tansu reports only the settings a topic was created with.
fn create_with_retention(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for result in rt.block_on(admin.create_topics([&new], &AdminOptions::new()))? {
        result.map_err(|(t, code)| anyhow::anyhow!("creating {t}: {code}"))?;
    }
    Ok(())
}

/// Runs a peer's script; it prints one JSON line of what it measured.
fn peer(name: &str, brokers: &str, published: &Published) -> Result<Run> {
    let python = std::env::var("TESSERA_PEERS_PYTHON").unwrap_or_else(|_| {
        format!("{}/.cache/tessera/venv-peers/bin/python", std::env::var("HOME").unwrap_or_default())
    });
    let script = format!("{}/benches/peers/{name}_zscore.py", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(&python);
    command.args([&script, "--brokers", brokers, "--topic", TOPIC]);
    if name == "quix" {
        command.args(["--expect-windows", &(published.windows - published.motors).to_string()]);
    }
    if name == "pathway" {
        command.args(["--expect-readings", &published.readings.to_string()]);
    }
    let out = command.output().with_context(|| format!("running {python} {script} (benches/peers/setup.sh)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    if !out.status.success() || v.get("error").is_some() || v.get("secs").is_none() {
        bail!("{name} failed ({}): {line}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let n = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Run {
        engine: v["peer"].as_str().unwrap_or(name).into(),
        readings: n("readings") as u64,
        secs: n("secs"),
        cpu_secs: n("cpu_secs"),
        windows: n("windows") as u64,
        hits: n("hits") as u64,
    })
}

fn main() -> Result<()> {
    let args = args()?;
    let (_embedded, _tansu, brokers) = match args.broker.as_str() {
        "mock" => {
            let k = EmbeddedKafka::start(1)?;
            for (t, p) in [
                (TOPIC, args.partitions),
                ("peers-alerts", 1),
                ("peers-late", 1),
                ("peers-dlq", 1),
                ("peers-detect-dlq", 1),
            ] {
                k.create_topic(t, p)?;
            }
            let b = k.bootstrap_servers();
            (Some(k), None, b)
        }
        "tansu" => {
            let t = TansuBroker::start()?;
            let b = t.bootstrap_servers();
            create_with_retention(&b, TOPIC, args.partitions)?;
            ensure_topics(&b, &[("peers-alerts", 1), ("peers-late", 1), ("peers-dlq", 1), ("peers-detect-dlq", 1)])?;
            (None, Some(t), b)
        }
        other => bail!("--broker {other}: use tansu or mock"),
    };
    let t0 = Instant::now();
    let published = publish(&brokers, args.motors, args.readings)?;
    println!(
        "broker {}, {} partitions: {} JSON readings of {} motors ({} windows) produced in {:.1} s",
        args.broker,
        args.partitions,
        published.readings,
        published.motors,
        published.windows,
        t0.elapsed().as_secs_f64()
    );
    let mut runs = vec![tessera(&brokers, &published)?];
    for name in &args.peers {
        match peer(name, &brokers, &published) {
            Ok(run) => runs.push(run),
            Err(e) => println!("{name}: {e:#}"),
        }
    }
    println!("| engine | readings | readings/s | CPU per reading | windows | z > 3 |");
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {:.0} | {:.2} us | {} | {} |",
            r.engine,
            r.readings,
            r.rate(),
            r.cpu_us(),
            r.windows,
            r.hits
        );
    }
    let tessera_run = &runs[0];
    if let Some(fastest) = runs[1..].iter().max_by(|a, b| a.rate().total_cmp(&b.rate())) {
        let ratio = tessera_run.rate() / fastest.rate();
        println!(
            "tessera / fastest peer ({}): {ratio:.1}x readings/s, {:.1}x less CPU per reading (goal >= 10x)",
            fastest.engine,
            fastest.cpu_us() / tessera_run.cpu_us()
        );
        record("kafka_peers", "tessera / fastest peer, readings/s", ratio, "x", Better::Higher);
    }
    for r in &runs {
        record("kafka_peers", &format!("{} readings/s", r.engine), r.rate(), "readings/s", Better::Higher);
        record("kafka_peers", &format!("{} CPU per reading", r.engine), r.cpu_us(), "us", Better::Lower);
    }
    Ok(())
}
