//! The fault harness: checkpointed nodes run as separate processes (this test binary started
//! again, running [`node_process`]) on loopback, and are killed with SIGKILL, at failpoints or
//! at any moment, or join and leave, while readings flow. The broker is librdkafka's mock
//! cluster served from the test process (see [`broker`] for why not Tansu in the kill tests);
//! the join/leave test also runs against a Tansu broker process.
//!
//! Each test prints its figures on one `fault:` line. Size: `TESSERA_FAULT_READINGS`
//! (default 100 000 for the test command; docs/RELIABILITY.md gives the full-size command).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tessera_core::Reading;
use tessera_node::config::NodeConfig;
use tessera_node::detect::{ENGINE_SECTION, build_engine};
use tessera_node::node::Node;
use tessera_suite::{committed_and_end, payload, producer, read_topic};
use tessera_workload::producer::WireFormat;
use tessera_workload::simulate::{FleetSpec, Simulator};

use crate::support::TestNode;
use crate::support::cluster::ChildProcess;

/// Set in a node process: its config, as JSON.
const NODE_CONFIG_ENV: &str = "TESSERA_FAULT_NODE";
/// `failpoint:n`: the node kills itself (SIGKILL) the n-th time it passes the failpoint.
const KILL_AT_ENV: &str = "TESSERA_FAULT_KILL_AT";
/// `name=actions`: a failpoint configured in the node process (the `fail` crate's syntax).
const FAILPOINTS_ENV: &str = "TESSERA_FAULT_FAILPOINTS";
/// The node stops gracefully once this file exists.
const STOP_FILE_ENV: &str = "TESSERA_FAULT_STOP_FILE";

const MOTORS: u32 = 100;

/// The detection queries of the fault tests: every kind of state (running aggregates and raw
/// rows, two anomaly functions, alert hysteresis) on windows short enough to close often.
fn queries() -> Vec<String> {
    vec![
        "CREATE CONTINUOUS QUERY health WITH (open_above = 4, close_below = 2, open_windows = 2, close_windows = 2) AS
         SELECT motor_id, window_start, count(*) AS n, avg(current_a) AS current_a,
                greatest(abs(zscore(motor_id, window_start, avg(current_a), 10, 5)),
                         abs(zscore(motor_id, window_start, avg(vibration_x_rms), 10, 5)),
                         abs(zscore(motor_id, window_start, avg(temperature_c), 10, 5))) AS score
         FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start"
            .to_string(),
        "CREATE CONTINUOUS QUERY spikes WITH (open_above = 5, close_below = 2, open_windows = 1, close_windows = 3) AS
         SELECT motor_id, window_start, count(DISTINCT seq) AS n, spike(motor_id, window_start, max(current_a), 8) AS score
         FROM HOP(telemetry, ts, INTERVAL '1 second', INTERVAL '3 seconds') WHERE current_a > 0 GROUP BY motor_id, window_start"
            .to_string(),
    ]
}

fn node_config(brokers: &str, state_dir: &Path) -> NodeConfig {
    // (TestNode: processing-time idleness never closes windows, so results depend on the
    // input alone, to compare with the uninterrupted reference.)
    TestNode::new("site-a", brokers, "fault-nodes", "telemetry")
        .queries(queries())
        .state(state_dir, Duration::from_millis(300))
        .with(|c| {
            // A killed node's partitions move on once its session times out.
            c.ingest.kafka.insert("session.timeout.ms".into(), "3000".into());
            c.ingest.kafka.insert("heartbeat.interval.ms".into(), "300".into());
        })
        .config()
}

fn readings_wanted() -> u64 {
    std::env::var("TESSERA_FAULT_READINGS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn fleet(readings: u64, start_ms: i64) -> Simulator {
    Simulator::new(FleetSpec {
        motors: MOTORS,
        sites: 3,
        rate_hz: 10.0,
        steps: readings / MOTORS as u64,
        start_ms,
        fault_fraction: 0.1,
        seed: 41,
    })
}

/// A node process of the fault tests; does nothing unless started by one of them.
#[test]
#[ignore = "a node process the fault tests start themselves"]
fn node_process() {
    let Ok(config) = std::env::var(NODE_CONFIG_ENV) else { return };
    crate::init_logging();
    let config: NodeConfig = serde_json::from_str(&config).expect("the node config");
    if let Ok(spec) = std::env::var(KILL_AT_ENV) {
        let (name, nth) = spec.split_once(':').expect("failpoint:n");
        let nth: u32 = nth.parse().expect("failpoint:n");
        let hits = AtomicU32::new(0);
        let point = name.to_string();
        fail::cfg_callback(name, move || {
            if hits.fetch_add(1, Ordering::SeqCst) + 1 == nth {
                println!("fault: SIGKILL at {point} #{nth}");
                let _ = Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
                std::thread::sleep(Duration::from_secs(60));
            }
        })
        .expect("failpoint");
    }
    if let Ok(spec) = std::env::var(FAILPOINTS_ENV) {
        let (name, actions) = spec.split_once('=').expect("name=actions");
        fail::cfg(name, actions).expect("failpoint actions");
    }
    let stop_file = PathBuf::from(std::env::var(STOP_FILE_ENV).expect("stop file"));
    let node = match Node::start(&config) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("node error: {}", tessera_core::error_chain(&e));
            std::process::exit(3);
        }
    };
    let mut printed = 0;
    let mut print_adopted = |node: &Node| {
        let adopted = node.detect_stats().adopted;
        for a in &adopted[printed..] {
            println!(
                "fault: restored {}/{} checkpoint {} ({} open windows)",
                a.partition.0, a.partition.1, a.id, a.open_windows
            );
        }
        printed = adopted.len();
    };
    let mut last_progress = Instant::now();
    while !stop_file.exists() && !node.failed() {
        print_adopted(&node);
        if last_progress.elapsed() >= Duration::from_millis(250) {
            // The last of these a killed node printed says what it had consumed.
            println!("fault: consumed {}", node.ingest_stats().messages);
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    print_adopted(&node);
    let stats = node.detect_stats();
    println!(
        "fault: wrote {} checkpoints; longest checkpoint pause of the detection thread {} ms (the last barrier's flush {} ms and write {} ms were on the writer thread)",
        stats.checkpoints,
        stats.longest_checkpoint_pause_us / 1000,
        stats.last_checkpoint_flush_us / 1000,
        stats.last_checkpoint_write_us / 1000
    );
    for ((topic, partition), id) in &stats.written {
        println!("fault: newest {topic}/{partition} checkpoint {id}");
    }
    match node.stop() {
        Ok((stats, _)) => {
            println!("fault: consumed {}", stats.messages);
            println!(
                "fault: stopped after {} messages ({} of revoked partitions dropped), {} partitions resumed at a checkpoint, {} barriers, {} rebalances, \
                 {} memory pauses, {} consumer errors, {} offsets skipped, {} delivered again and dropped; longest stall {} ms, longest rebalance {} ms",
                stats.messages,
                stats.stale_dropped,
                stats.resumed_at_checkpoint,
                stats.barriers,
                stats.rebalances,
                stats.memory_pauses,
                stats.consumer_errors,
                stats.offsets_skipped,
                stats.redelivered_dropped,
                stats.longest_stall_us / 1000,
                stats.longest_rebalance_us / 1000
            )
        }
        Err(e) => {
            eprintln!("node error: {}", tessera_core::error_chain(&e));
            std::process::exit(3);
        }
    }
}

/// The tests that start node processes run one at a time: each runs several processes on the
/// machine's two cores, and their timing figures (stalls, drain times, capacity) mean little
/// when two of them compete.
pub(crate) fn node_processes() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A node process of the fault tests (a [`ChildProcess`] running [`node_process`]) and how to
/// stop it.
pub(crate) struct NodeProcess {
    process: ChildProcess,
    stop_file: PathBuf,
}

impl NodeProcess {
    pub(crate) fn start(config: &NodeConfig, kill_at: Option<&str>, work: &Path, n: usize) -> Self {
        Self::start_with(config, kill_at, None, work, n)
    }

    fn start_with(config: &NodeConfig, kill_at: Option<&str>, failpoints: Option<&str>, work: &Path, n: usize) -> Self {
        let stop_file = work.join(format!("stop-{n}"));
        let args = ["--exact", "fault::node_process", "--ignored", "--nocapture", "--test-threads=1"].map(String::from);
        let mut env = vec![
            (NODE_CONFIG_ENV, serde_json::to_string(config).expect("config as JSON")),
            (STOP_FILE_ENV, stop_file.display().to_string()),
        ];
        env.extend(kill_at.map(|k| (KILL_AT_ENV, k.to_string())));
        env.extend(failpoints.map(|f| (FAILPOINTS_ENV, f.to_string())));
        NodeProcess { process: ChildProcess::spawn(&args, &env), stop_file }
    }

    /// Waits for the process to end by itself; its status and output.
    fn wait(self, deadline: Duration) -> (ExitStatus, String) {
        match self.process.wait(deadline) {
            (Some(status), text) => (status, text),
            (None, text) => panic!("node process still running after {deadline:?}:\n{text}"),
        }
    }

    /// Asks the process to stop gracefully and waits.
    pub(crate) fn stop(self, deadline: Duration) -> (ExitStatus, String) {
        std::fs::write(&self.stop_file, b"stop").expect("stop file");
        self.wait(deadline)
    }

    /// Kills the process (SIGKILL); its output.
    pub(crate) fn kill(mut self) -> String {
        self.process.kill();
        self.wait(Duration::from_secs(30)).1
    }
}

/// The last `fault: consumed N` a node printed.
fn consumed(output: &str) -> u64 {
    output.lines().rev().find_map(|l| l.split("fault: consumed ").nth(1)?.trim().parse().ok()).unwrap_or(0)
}

/// A number a node printed as `<label> N ms`, the largest over `outputs`.
fn longest_ms(outputs: &[String], label: &str) -> u64 {
    outputs
        .iter()
        .flat_map(|o| o.lines())
        .filter_map(|l| l.split(label).nth(1)?.split(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// (alert id, state, window start) of an alert event as JSON.
fn alert_key(v: &serde_json::Value) -> (String, String, i64) {
    (
        v["alert_id"].as_str().unwrap_or_default().to_string(),
        v["state"].as_str().unwrap_or_default().to_string(),
        v["window_start_ms"].as_i64().unwrap_or_default(),
    )
}

/// The alert events on the `alerts` topic: how many, and how often each (alert id, state,
/// window start) came.
fn alerts_sent(brokers: &str) -> (usize, BTreeMap<(String, String, i64), usize>) {
    let end = committed_and_end(brokers, "fault-alert-reader", "alerts", 1).unwrap()[0].2 as usize;
    let mut got = BTreeMap::new();
    for m in read_topic(brokers, "alerts", end, Duration::from_secs(60)).unwrap() {
        let v: serde_json::Value = serde_json::from_slice(payload(&m)).unwrap();
        *got.entry(alert_key(&v)).or_insert(0) += 1;
    }
    (end, got)
}

/// A broker with `partitions` telemetry partitions, a site's node config (consumer group
/// `group`, state under `work`), and `TESSERA_FAULT_READINGS` readings with the uninterrupted
/// run's state and alerts.
struct Scenario {
    kafka: Broker,
    brokers: String,
    /// Settings the readings' producer needs for this broker.
    producer_settings: BTreeMap<String, String>,
    config: NodeConfig,
    steps: Vec<Vec<Reading>>,
    total: u64,
    expected_digest: tessera_stream::StateDigest,
    expected_alerts: BTreeMap<(String, String, i64), usize>,
}

/// The broker of a scenario, stopped when dropped.
#[allow(dead_code, reason = "held only to keep the broker running")]
enum Broker {
    /// librdkafka's mock cluster, served from this process.
    Mock(tessera_workload::embedded::EmbeddedKafka),
    /// A Tansu broker process.
    Process(tessera_suite::TansuBroker),
}

fn scenario(partitions: i32, group: &str, work: &Path) -> Scenario {
    let (kafka, brokers) = crate::embedded_kafka(1, partitions);
    for topic in ["alerts", "late"] {
        kafka.create_topic(topic, 1).unwrap();
    }
    scenario_on(Broker::Mock(kafka), brokers, BTreeMap::new(), readings_wanted(), group, work)
}

/// The same, on a Tansu broker process.
fn scenario_on_tansu(partitions: i32, group: &str, work: &Path) -> Scenario {
    let broker = tessera_suite::TansuBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    tessera_node::topics::ensure_topics(
        &brokers,
        &[("telemetry", partitions), ("dead-letters", 1), ("alerts", 1), ("late", 1)],
    )
    .unwrap();
    // One reading per record batch: Tansu 0.6.0 answers a fetch at an offset inside a batch
    // with the next batch (the rest of the batch is skipped; Kafka returns the whole batch and
    // the client drops what precedes the offset), and reports the last batch's base offset + 1
    // as the high watermark. A consumer resuming at a checkpoint's offset inside a batch would
    // lose readings to the broker (the node reports them as offsets skipped). See
    // docs/RELIABILITY.md.
    // Tansu takes some 700 such records a second: a fifth of the readings.
    let settings =
        [("batch.num.messages", "1"), ("linger.ms", "0")].map(|(k, v)| (k.to_string(), v.to_string())).into();
    scenario_on(Broker::Process(broker), brokers, settings, readings_wanted() / 5, group, work)
}

fn scenario_on(
    kafka: Broker,
    brokers: String,
    producer_settings: BTreeMap<String, String>,
    wanted: u64,
    group: &str,
    work: &Path,
) -> Scenario {
    let mut config = node_config(&brokers, &work.join("state"));
    config.ingest.group_id = group.into();
    let start_ms = tessera_core::now_ms() - (wanted / MOTORS as u64) as i64 * 100;
    let mut sim = fleet(wanted, start_ms);
    let steps: Vec<Vec<Reading>> = std::iter::from_fn(|| sim.next_step()).collect();
    let total: u64 = steps.iter().map(|s| s.len() as u64).sum();
    let (expected_digest, expected_alerts) = reference(&config, &steps);
    Scenario { kafka, brokers, producer_settings, config, steps, total, expected_digest, expected_alerts }
}

/// The broker the node processes share, on loopback: librdkafka's mock cluster, served from
/// this process. Tansu, the broker process of the other end-to-end tests, does not evict a
/// consumer-group member that was killed (its partitions stay with the dead member; with
/// static membership they are revoked and never handed out again), so a restarted node would
/// wait forever. See docs/RELIABILITY.md.
fn broker() -> (tessera_workload::embedded::EmbeddedKafka, String) {
    let (kafka, brokers) = crate::embedded_kafka(1, 3);
    for topic in ["alerts", "late"] {
        kafka.create_topic(topic, 1).unwrap();
    }
    (kafka, brokers)
}

/// Publishes `steps` in small pieces spread evenly over `over`, on a thread.
fn publish_over(brokers: &str, steps: &[Vec<Reading>], over: Duration) -> std::thread::JoinHandle<()> {
    publish_over_with(brokers, steps, over, BTreeMap::new())
}

/// [`publish_over`] with producer settings.
fn publish_over_with(
    brokers: &str,
    steps: &[Vec<Reading>],
    over: Duration,
    settings: BTreeMap<String, String>,
) -> std::thread::JoinHandle<()> {
    let (brokers, steps) = (brokers.to_string(), steps.to_vec());
    std::thread::spawn(move || {
        let p =
            tessera_workload::producer::TelemetryProducer::new(&brokers, "telemetry", WireFormat::Protobuf, &settings)
                .unwrap();
        let pieces = (over.as_millis() / 100).max(1) as usize;
        let started = Instant::now();
        for (i, piece) in steps.chunks(steps.len().div_ceil(pieces)).enumerate() {
            piece.iter().for_each(|s| p.send_readings(s).unwrap());
            p.flush(Duration::from_secs(60)).unwrap();
            let due = started + over.mul_f64((i + 1) as f64 / pieces as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    })
}

/// How long readings flow in the three-node tests (`TESSERA_FAULT_FLOW_S`, default 35 s: three
/// kills, seven membership changes).
fn flow_duration() -> Duration {
    Duration::from_secs(std::env::var("TESSERA_FAULT_FLOW_S").ok().and_then(|v| v.parse().ok()).unwrap_or(35))
}

/// What a site's state directory holds: every partition's newest checkpoint, adopted into one
/// engine.
struct SiteState {
    digest: tessera_stream::StateDigest,
    /// Next offset per (topic, partition).
    offsets: BTreeMap<(String, i32), i64>,
    /// Checkpoint files and their bytes.
    files: usize,
    bytes: u64,
}

fn site_state(config: &NodeConfig) -> SiteState {
    let mut engine = build_engine(&config.detect).unwrap();
    let (mut offsets, mut bytes) = (BTreeMap::new(), 0);
    let site = read_checkpoints(config).unwrap();
    for (_, loaded) in &site {
        engine.adopt(loaded.checkpoint.section(ENGINE_SECTION).unwrap()).unwrap();
        for o in &loaded.checkpoint.offsets {
            offsets.insert((o.topic.clone(), o.partition), o.next_offset);
        }
        bytes += std::fs::metadata(&loaded.path).map_or(0, |m| m.len());
    }
    SiteState { digest: engine.state_digest().unwrap(), offsets, files: site.len(), bytes }
}

/// The partitions of `telemetry` whose newest checkpoint does not hold exactly the partition's
/// messages (one reading each) up to its end, described.
fn partitions_off(brokers: &str, group: &str, config: &NodeConfig) -> Vec<String> {
    let site = read_checkpoints(config).unwrap();
    let ends = committed_and_end(brokers, group, "telemetry", site.len() as i32).unwrap();
    let mut off = Vec::new();
    for ((tp, loaded), (_, _, end)) in site.iter().zip(&ends) {
        let rows_in = tessera_stream::state_digest(loaded.checkpoint.section(ENGINE_SECTION).unwrap()).unwrap().rows_in;
        let next = loaded.checkpoint.offsets.iter().map(|o| o.next_offset).sum::<i64>();
        if rows_in != *end as u64 || next != *end {
            off.push(format!(
                "{}/{}: checkpoint {} holds {rows_in} readings, next offset {next}; the partition has {end}",
                tp.0, tp.1, loaded.checkpoint.id
            ));
        }
    }
    off
}

/// Every reading in the stores `dirs` (sealed under `kek_file`; their `telemetry` segments),
/// by (motor, sequence), with how many times it is stored.
fn stored_readings(dirs: &[PathBuf], kek_file: &Path) -> BTreeMap<(String, u64), u64> {
    let mut seen = BTreeMap::new();
    for dir in dirs {
        let kek = tessera_store::Kek::read(kek_file).unwrap();
        let store = tessera_store::SegmentStore::open(dir, kek).unwrap();
        for segment in store.segments().iter().filter(|s| s.stream == "telemetry") {
            for batch in store.read(&segment.id, Some(&["motor_id", "seq"])).unwrap() {
                let motors = batch.column_by_name("motor_id").unwrap();
                let motors = motors.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
                let seqs = batch.column_by_name("seq").unwrap();
                let seqs = seqs.as_any().downcast_ref::<arrow_array::UInt64Array>().unwrap();
                for i in 0..batch.num_rows() {
                    *seen.entry((motors.value(i).to_string(), seqs.value(i))).or_insert(0) += 1;
                }
            }
        }
    }
    seen
}

/// The site's checkpoints where `config` keeps them (a directory or an object store; sealed
/// when it names a KEK).
fn read_checkpoints(
    config: &NodeConfig,
) -> Result<Vec<(tessera_ingest::TopicPartition, tessera_state::Loaded)>, tessera_node::NodeError> {
    let stores = tessera_node::checkpoints::PartitionCheckpoints::configured(&config.state)?.expect("checkpoints");
    stores.sealed(config.store.checkpoint_sealer()?).read_site()
}

/// Messages of `topic` the site's checkpoints cover (0 while none is readable).
fn covered(config: &NodeConfig, topic: &str) -> i64 {
    read_checkpoints(config).map_or(0, |site| {
        site.iter().flat_map(|(_, l)| &l.checkpoint.offsets).filter(|o| o.topic == topic).map(|o| o.next_offset).sum()
    })
}

/// The uninterrupted reference: the same readings straight into an engine, motor order kept.
fn reference(
    config: &NodeConfig,
    steps: &[Vec<Reading>],
) -> (tessera_stream::StateDigest, BTreeMap<(String, String, i64), usize>) {
    let mut engine = build_engine(&config.detect).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut alerts = BTreeMap::new();
    for chunk in steps.chunks(20) {
        let mut builder = tessera_ingest::ShardBuilder::with_capacity(chunk.len() * MOTORS as usize);
        chunk.iter().flatten().for_each(|r| builder.append(r));
        let out = rt.block_on(engine.push(&builder.finish(), 0)).unwrap();
        for e in out.alerts {
            *alerts.entry(alert_key(&serde_json::to_value(&e).unwrap())).or_insert(0) += 1;
        }
    }
    (engine.state_digest().unwrap(), alerts)
}

/// The node processes are killed at the two dangerous moments of a checkpoint, again and
/// again, while readings flow; the run that follows restores, resumes and finishes. Nothing
/// is lost or counted twice (the final state equals the uninterrupted run's, reading for
/// reading), and the alerts are the uninterrupted run's, some sent twice with the same id.
#[test]
fn killed_nodes_lose_nothing_and_raise_the_same_alerts() {
    let _one_at_a_time = node_processes();
    // 12 partitions: the mock cluster keeps only 5 MB of a partition's log, a few seconds at the
    // full size's rate over 3 partitions, less than a restart takes.
    let work = tempfile::tempdir().unwrap();
    let Scenario {
        kafka: broker,
        brokers,
        producer_settings: _,
        config,
        steps,
        total,
        expected_digest,
        expected_alerts,
    } = scenario(12, "fault-nodes", work.path());
    assert!(expected_alerts.len() >= 5, "the reference raises alerts: {expected_alerts:?}");
    assert_eq!(expected_digest.rows_in, total);

    // Readings flow the whole time (`TESSERA_FAULT_FLOW_S`), while node processes are started
    // one after the other and each is killed at its failpoint: the first checkpoint or commit
    // with new data after it got its partitions (a node gets them once the group has given up
    // on the killed one). The input outlasts the kills; flowing rather than published up
    // front, it never outgrows what the mock cluster keeps of a partition.
    let kills = [
        "detect-after-checkpoint-write:2",
        "ingest-after-commit:1",
        "detect-after-checkpoint-write:1",
        "ingest-after-commit:1",
    ];
    let started = Instant::now();
    let publisher = publish_over(&brokers, &steps, flow_duration());
    for (n, kill_at) in kills.iter().enumerate() {
        let node = NodeProcess::start(&config, Some(kill_at), work.path(), n);
        let (status, out) = node.wait(Duration::from_secs(120));
        eprintln!("fault: node {n} ended ({status}) after {:.1?}:\n{out}", started.elapsed());
        assert_eq!(status.signal(), Some(9), "node {n} was to be killed at {kill_at}; it ended with {status}:\n{out}");
        assert!(out.contains(&format!("fault: SIGKILL at {}", kill_at.replace(':', " #"))), "{out}");
        assert!(!publisher.is_finished(), "the input flowed until the last kill (raise TESSERA_FAULT_FLOW_S)");
    }

    // The last node runs until its checkpoint covers every message, then stops gracefully.
    let last = NodeProcess::start(&config, None, work.path(), kills.len());
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let covered = covered(&config, "telemetry");
        if covered as u64 >= total {
            break;
        }
        if Instant::now() > deadline {
            let (status, out) = last.stop(Duration::from_secs(120));
            panic!(
                "the checkpoint covers {covered} of {total} messages after 300 s; the node ended with {status}:\n{out}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    publisher.join().unwrap();
    let (status, out) = last.stop(Duration::from_secs(120));
    assert!(status.success(), "the last node stops cleanly: {status}\n{out}");
    assert!(out.contains("fault: restored telemetry/"), "{out}");
    let elapsed = started.elapsed();

    // State: the partitions' final checkpoints, adopted together, equal the uninterrupted run's.
    let site = site_state(&config);
    let digest = site.digest;
    let lost = total.saturating_sub(digest.rows_in);
    let counted_twice = digest.rows_in.saturating_sub(total);
    // Offsets: committed at most one checkpoint behind, never ahead of it.
    let committed = committed_and_end(&brokers, "fault-nodes", "telemetry", 12).unwrap();
    for (p, c, end) in &committed {
        let cp = site.offsets.get(&("telemetry".to_string(), *p)).copied().unwrap_or(0);
        assert!(*c <= cp && cp == *end, "partition {p}: committed {c}, checkpoint {cp}, end {end}");
    }

    // Alerts: the same set, duplicates recognisable by id.
    let (end, got) = alerts_sent(&brokers);
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    println!(
        "fault: kill -9 at checkpoint failpoints: {total} readings, {} kills, {elapsed:.1?}; lost {lost}, counted twice {counted_twice}; \
         {} alert events ({} distinct, reference {}), {duplicates} re-sent with the same id; final checkpoints {} files, {} bytes",
        kills.len(),
        end,
        got.len(),
        expected_alerts.len(),
        site.files,
        site.bytes,
    );
    assert_eq!((lost, counted_twice), (0, 0));
    assert_eq!(digest, expected_digest, "the final state equals the uninterrupted run's");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected_alerts.keys().collect::<Vec<_>>(),
        "the alerts are the uninterrupted run's"
    );
    drop(broker);
}

/// The state directory fills up (a small tmpfs in a private mount namespace, `unshare -rm`):
/// the node stops with an error naming the file and the cause, commits nothing past its last
/// checkpoint, and once space is back a restart restores exactly that checkpoint.
#[test]
fn a_full_disk_stops_the_node_cleanly_and_a_restart_resumes() {
    let _one_at_a_time = node_processes();
    let (_broker, brokers) = broker();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = node_config(&brokers, &state);
    let mut sim = fleet(40_000, tessera_core::now_ms() - 40_000);
    let steps: Vec<Vec<Reading>> = std::iter::from_fn(|| sim.next_step()).collect();

    // Inside the namespace: a 16 MiB tmpfs on the state directory; node 1 runs until it has a
    // checkpoint, then the disk is filled; after node 1 has stopped, the filler is removed and
    // node 2 starts. The tmpfs lives as long as the script, so both nodes see it.
    let script = r#"
        mount -t tmpfs -o size=16m tmpfs "$STATE" || exit 90
        TESSERA_FAULT_STOP_FILE="$WORK/stop-1" "$BIN" --exact fault::node_process --ignored --nocapture --test-threads=1 > "$WORK/node1.log" 2>&1 &
        node=$!
        i=0
        while ! find "$STATE" -name 'checkpoint-*' | grep -q . && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
        dd if=/dev/zero of="$STATE/filler" bs=64k 2>/dev/null
        wait $node
        echo $? > "$WORK/node1.status"
        rm -f "$STATE/filler"
        TESSERA_FAULT_STOP_FILE="$WORK/stop-2" "$BIN" --exact fault::node_process --ignored --nocapture --test-threads=1 > "$WORK/node2.log" 2>&1
        echo $? > "$WORK/node2.status"
    "#;
    // Whatever happens, the nodes in the namespace are told to stop (a node process must never
    // outlive the test).
    struct StopFiles<'a>(&'a Path);
    impl Drop for StopFiles<'_> {
        fn drop(&mut self) {
            for n in ["stop-1", "stop-2"] {
                let _ = std::fs::write(self.0.join(n), b"stop");
            }
        }
    }
    let _stop_files = StopFiles(work.path());
    let mut namespace = Command::new("unshare")
        .args(["-rm", "sh", "-c", script])
        .env("STATE", &state)
        .env("WORK", work.path())
        .env("BIN", std::env::current_exe().unwrap())
        .env(NODE_CONFIG_ENV, serde_json::to_string(&config).unwrap())
        .env_remove(KILL_AT_ENV)
        .spawn()
        .expect("unshare runs");

    // Readings keep coming, so that node 1 has a checkpoint to write after the disk is full.
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
    let read = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(240);
    // Per partition: the newest checkpoint node 1 wrote, and the one node 2 restored (node 2
    // gets every partition once the group has given up on node 1).
    let ids = |log: &str, prefix: &str| -> BTreeMap<String, u64> {
        log.lines()
            .filter_map(|l| {
                let (partition, rest) = l.split(prefix).nth(1)?.split_once(" checkpoint ")?;
                Some((partition.to_string(), rest.split(' ').next()?.parse().ok()?))
            })
            .collect()
    };
    let mut pieces = steps.chunks(10);
    let all_restored = || {
        let written = ids(&read("node1.log"), "fault: newest ");
        !written.is_empty() && written.keys().all(|k| ids(&read("node2.log"), "fault: restored ").contains_key(k))
    };
    while !all_restored() {
        if let Some(piece) = pieces.next() {
            piece.iter().for_each(|s| p.send_readings(s).unwrap());
            p.flush(Duration::from_secs(30)).unwrap();
        }
        if let Ok(Some(status)) = namespace.try_wait() {
            panic!(
                "the namespace script ended early ({status}); node 1:\n{}\nnode 2:\n{}",
                read("node1.log"),
                read("node2.log")
            );
        }
        assert!(
            Instant::now() < deadline,
            "node 2 did not restore within 240 s; node 1:\n{}\nnode 2:\n{}",
            read("node1.log"),
            read("node2.log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(work.path().join("stop-2"), b"stop").unwrap();
    let status = namespace.wait().unwrap();
    let (node1, node2) = (read("node1.log"), read("node2.log"));
    assert!(status.success(), "{status}\nnode 1:\n{node1}\nnode 2:\n{node2}");

    assert_eq!(read("node1.status").trim(), "3", "node 1 stops with an error:\n{node1}");
    let error = node1.lines().find(|l| l.starts_with("node error:")).unwrap_or_default();
    assert!(
        error.contains("checkpoint") && error.contains("No space left on device") && error.contains(".tmp-checkpoint-"),
        "a clear error naming the file and the cause: {node1}"
    );
    let (written, restored) = (ids(&node1, "fault: newest "), ids(&node2, "fault: restored "));
    assert_eq!(read("node2.status").trim(), "0", "node 2 stops cleanly:\n{node2}");
    println!(
        "fault: disk full: node 1 wrote checkpoints {written:?}, then stopped with \"{}\"; node 2 restored {restored:?}",
        error.trim()
    );
    assert!(!written.is_empty());
    assert_eq!(
        restored, written,
        "the restart reaches, per partition, the last checkpoint written before the disk filled"
    );
}

/// Event-time chaos: one motor's clock runs 10 minutes fast, another's jumps 10 minutes back
/// now and then, and some clean motors send a reading stamped in the year 2100 or before
/// 1970. The bad timestamps are quarantined (dead-letter topic, counted by reason; the jumps
/// back on the late path, counted), and the clean motors' windows and scores are exactly those
/// of a run without the chaos.
#[test]
fn event_time_chaos_is_quarantined_and_clean_motors_are_unaffected() {
    let (_kafka, brokers) = broker();
    let work = tempfile::tempdir().unwrap();
    let mut config = node_config(&brokers, &work.path().join("state"));
    config.ingest.group_id = "chaos".into();
    let mut sim = Simulator::new(FleetSpec {
        motors: 30,
        sites: 3,
        rate_hz: 10.0,
        steps: 600,
        start_ms: tessera_core::now_ms() - 60_000,
        fault_fraction: 0.0,
        seed: 9,
    });
    let clean: Vec<Vec<Reading>> = std::iter::from_fn(|| sim.next_step()).collect();
    let rename =
        |r: &Reading, id: &str| Reading { motor_id: tessera_core::MotorId::new(id.to_string()).unwrap(), ..r.clone() };
    let (mut fast, mut jumpy, mut bad) = (0u64, 0u64, 0u64);
    let mut chaotic: Vec<Vec<Reading>> = Vec::new();
    for (i, step) in clean.iter().enumerate() {
        let mut out = step.clone();
        // X-FAST: every reading 10 minutes ahead (beyond the 5 minutes allowed).
        out.push(Reading { event_time_ms: step[0].event_time_ms + 600_000, ..rename(&step[0], "X-FAST") });
        fast += 1;
        // X-JUMPY: on time, but every 50th reading 10 minutes behind (late for its windows).
        let back = if i % 50 == 49 { 600_000 } else { 0 };
        out.push(Reading { event_time_ms: step[1].event_time_ms - back, ..rename(&step[1], "X-JUMPY") });
        jumpy += u64::from(back > 0);
        // Clean motors, now and then: the year 2100, or before 1970.
        if i % 100 == 7 {
            out.push(Reading { event_time_ms: 4_102_444_800_000, sequence: 1_000_000 + i as u64, ..step[2].clone() });
            out.push(Reading { event_time_ms: -5_000, sequence: 2_000_000 + i as u64, ..step[3].clone() });
            bad += 1;
        }
        chaotic.push(out);
    }
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
    chaotic.iter().for_each(|s| p.send_readings(s).unwrap());
    p.flush(Duration::from_secs(60)).unwrap();
    let messages: u64 = chaotic.iter().map(|s| s.len() as u64).sum();

    let node = Node::start(&config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while node.ingest_stats().messages < messages {
        assert!(Instant::now() < deadline, "consumed {} of {messages}", node.ingest_stats().messages);
        std::thread::sleep(Duration::from_millis(50));
    }
    let late = || node.detect_stats().late_sent;
    while late() < jumpy && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (stats, engine) = node.stop().unwrap();
    let rejected: BTreeMap<&str, u64> = stats.rejected_by_reason.iter().copied().collect();

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let windows = |engine: &tessera_stream::StreamEngine| {
        let sql = "SELECT query, motor_id, window_start, score, features FROM motor_windows WHERE motor_id LIKE 'M%' ORDER BY 1, 2, 3";
        datafusion::arrow::util::pretty::pretty_format_batches(&rt.block_on(engine.sql(sql)).unwrap())
            .unwrap()
            .to_string()
    };
    let mut reference = build_engine(&config.detect).unwrap();
    for chunk in clean.chunks(20) {
        let mut builder = tessera_ingest::ShardBuilder::with_capacity(chunk.len() * 30);
        chunk.iter().flatten().for_each(|r| builder.append(r));
        rt.block_on(reference.push(&builder.finish(), 0)).unwrap();
    }
    let (got, expected) = (windows(&engine), windows(&reference));
    println!(
        "fault: event-time chaos: {messages} messages; quarantined {} future (expected {}), {} stale (expected {bad}); {} late (expected {jumpy}); clean motors' {} window rows equal the clean run: {}",
        rejected.get("future_event_time").copied().unwrap_or(0),
        fast + bad,
        rejected.get("stale_event_time").copied().unwrap_or(0),
        late_count(&engine, &rt),
        expected.lines().count().saturating_sub(4),
        got == expected
    );
    assert_eq!(rejected.get("future_event_time").copied(), Some(fast + bad));
    assert_eq!(rejected.get("stale_event_time").copied(), Some(bad));
    assert_eq!(late_count(&engine, &rt), jumpy);
    assert!(expected.lines().count() > 1000, "{expected}");
    assert_eq!(got, expected, "the clean motors' windows equal the run without chaos");
}

/// Late readings the first stage reported.
fn late_count(engine: &tessera_stream::StreamEngine, rt: &tokio::runtime::Runtime) -> u64 {
    let batches =
        rt.block_on(engine.sql("SELECT count(*) AS n FROM late_events WHERE late_for LIKE 'tumble%'")).unwrap();
    batches[0].column(0).as_any().downcast_ref::<arrow_array::Int64Array>().map_or(0, |a| a.value(0)) as u64
}

/// A message that makes the decoder panic (a failpoint panics on one otherwise valid reading)
/// is isolated: it goes to the dead-letter topic with reason `poison` and the panic's message,
/// the node keeps running, and every other reading is in the state exactly once.
#[test]
fn a_poison_message_is_dead_lettered_and_the_partition_moves_on() {
    let _one_at_a_time = node_processes();
    let (_kafka, brokers) = broker();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let mut config = node_config(&brokers, &state);
    config.ingest.group_id = "poison".into();
    let mut sim = Simulator::new(FleetSpec {
        motors: 20,
        sites: 1,
        rate_hz: 10.0,
        steps: 200,
        start_ms: tessera_core::now_ms() - 20_000,
        fault_fraction: 0.0,
        seed: 5,
    });
    let steps: Vec<Vec<Reading>> = std::iter::from_fn(|| sim.next_step()).collect();
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
    let (before, after) = steps.split_at(100);
    before.iter().for_each(|s| p.send_readings(s).unwrap());
    let mut poisoned = steps[0][0].clone();
    poisoned.motor_id = tessera_core::MotorId::new("M-POISON".to_string()).unwrap();
    let json = serde_json::to_vec(&tessera_proto::json::reading_to_json(&poisoned)).unwrap();
    p.send_raw(Some(b"M-POISON"), &json, Some("application/json")).unwrap();
    after.iter().for_each(|s| p.send_readings(s).unwrap());
    p.flush(Duration::from_secs(30)).unwrap();
    let readings: u64 = steps.iter().map(|s| s.len() as u64).sum();

    let node = NodeProcess::start_with(&config, None, Some("ingest-decode=return(M-POISON)"), work.path(), 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while covered(&config, "telemetry") < readings as i64 + 1 {
        assert!(Instant::now() < deadline, "the node did not get past the poison message in 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, out) = node.stop(Duration::from_secs(120));
    assert!(status.success(), "{status}\n{out}");
    let dead = read_topic(&brokers, "dead-letters", 1, Duration::from_secs(30)).unwrap();
    let reason = tessera_suite::header(&dead[0], tessera_ingest::dead_letter_headers::REASON);
    let detail = tessera_suite::header(&dead[0], tessera_ingest::dead_letter_headers::DETAIL).unwrap_or_default();
    let digest = site_state(&config).digest;
    println!(
        "fault: poison: 1 message panicked the decoder -> dead letter ({reason:?}: {detail}); node kept running; {} of {readings} readings in the state",
        digest.rows_in
    );
    assert_eq!((dead.len(), reason.as_deref()), (1, Some("poison")));
    assert!(detail.contains("injected poison"), "{detail}");
    assert_eq!(payload(&dead[0]), &json[..], "the dead letter keeps the original bytes");
    assert_eq!(digest.rows_in, readings);
}

/// Three nodes share the partitions (6) and the site's state directory; every 10 s one of
/// them is SIGKILLed and started again, while readings flow. The killed node's partitions move
/// to the others from their last checkpoints, and move back when it returns. Nothing is lost or
/// counted twice, and the alerts are the uninterrupted run's (some re-sent with the same id).
/// Each node keeps its own store (a pod's volume, segments cut every 2 s): together they hold
/// every reading (an offset is committed, and a checkpoint written, only once its readings are
/// in a segment).
#[test]
fn three_nodes_with_one_killed_every_10_s_lose_nothing() {
    let _one_at_a_time = node_processes();
    let work = tempfile::tempdir().unwrap();
    let Scenario {
        kafka: _kafka,
        brokers,
        producer_settings: _,
        config,
        steps,
        total,
        expected_digest,
        expected_alerts,
    } = scenario(6, "three-nodes", work.path());
    let kek_file = work.path().join("site.kek");
    tessera_node::store::new_kek(&kek_file, 1).unwrap();
    let store_of = |pod: usize| work.path().join(format!("store-{pod}"));
    let config_of = |pod: usize| {
        let mut c = config.clone();
        c.store.dir = Some(store_of(pod));
        c.store.kek_file = Some(kek_file.clone());
        c.store.segment_interval = Duration::from_secs(2);
        c
    };

    let started = Instant::now();
    let mut started_nodes = 0;
    let mut start = |pod: usize| {
        started_nodes += 1;
        NodeProcess::start(&config_of(pod), None, work.path(), started_nodes)
    };
    let mut nodes: Vec<Option<NodeProcess>> = (0..3).map(|pod| Some(start(pod))).collect();
    let publisher = publish_over(&brokers, &steps, flow_duration());
    let (mut outputs, mut kills) = (Vec::new(), 0);
    let mut next_kill = Instant::now() + Duration::from_secs(10);
    while !publisher.is_finished() {
        if Instant::now() >= next_kill {
            let victim = kills % 3;
            outputs.push(nodes[victim].take().expect("running").kill());
            nodes[victim] = Some(start(victim));
            kills += 1;
            next_kill += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    publisher.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while (covered(&config_of(0), "telemetry") as u64) < total {
        if Instant::now() > deadline {
            let outs: Vec<String> = nodes.into_iter().flatten().map(|n| n.stop(Duration::from_secs(120)).1).collect();
            panic!(
                "the checkpoints cover {} of {total} messages after 300 s:\n{}",
                covered(&config_of(0), "telemetry"),
                outs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in nodes.into_iter().flatten() {
        let (status, out) = node.stop(Duration::from_secs(120));
        assert!(status.success(), "a node stops cleanly: {status}\n{out}");
        outputs.push(out);
    }
    let elapsed = started.elapsed();

    let site = site_state(&config_of(0));
    let (lost, counted_twice) = (total.saturating_sub(site.digest.rows_in), site.digest.rows_in.saturating_sub(total));
    let read_again = outputs.iter().map(|o| consumed(o)).sum::<u64>().saturating_sub(total);
    let (end, got) = alerts_sent(&brokers);
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    let restored = outputs.iter().flat_map(|o| o.lines()).filter(|l| l.contains("fault: restored ")).count();
    let stored = stored_readings(&(0..3).map(store_of).collect::<Vec<_>>(), &kek_file);
    let distinct = stored.keys().count() as u64;
    let stored_twice: u64 = stored.values().map(|n| n - 1).sum();
    println!(
        "fault: 3 nodes, one SIGKILLed every 10 s: {total} readings over 6 partitions, {kills} kills, {restored} partition checkpoints adopted, {elapsed:.1?}; \
         lost {lost}, counted twice {counted_twice}; readings read again after a kill (not counted again) at least {read_again}; \
         {end} alert events ({} distinct, reference {}), {duplicates} re-sent with the same id; \
         the 3 stores hold {distinct} distinct readings, {stored_twice} stored twice",
        got.len(),
        expected_alerts.len(),
    );
    assert_eq!(distinct, total, "the nodes' stores together hold every reading");
    assert!(kills >= 2, "the readings flowed long enough for two kills");
    assert_eq!(
        partitions_off(&brokers, "three-nodes", &config_of(0)),
        Vec::<String>::new(),
        "each partition's checkpoint holds exactly its messages"
    );
    assert_eq!((lost, counted_twice), (0, 0));
    assert_eq!(site.digest, expected_digest, "the final state equals the uninterrupted run's");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected_alerts.keys().collect::<Vec<_>>(),
        "the alerts are the uninterrupted run's"
    );
}

/// Two nodes run throughout; a third joins, and leaves gracefully, every 5 s while readings
/// flow. Each change moves partitions with their state (checkpointed at the hand-over); those
/// that do not move keep flowing. Nothing is lost or counted twice; the figure is the longest
/// stall of a partition that stayed where it was.
#[test]
fn a_node_joining_or_leaving_every_5_s_loses_nothing() {
    let _one_at_a_time = node_processes();
    let work = tempfile::tempdir().unwrap();
    join_and_leave(scenario(6, "join-leave", work.path()), work.path(), "mock cluster");
}

/// The same against a broker process (Tansu): graceful joins and leaves are what it handles
/// (it does not evict a killed member).
#[test]
fn a_node_joining_or_leaving_every_5_s_against_a_broker_process_loses_nothing() {
    let _one_at_a_time = node_processes();
    let work = tempfile::tempdir().unwrap();
    join_and_leave(scenario_on_tansu(6, "join-leave", work.path()), work.path(), "Tansu broker process");
}

/// The same with the partitions' checkpoints in an S3-compatible object store (moto's server)
/// instead of a shared directory: the nodes share nothing but the broker and the bucket, as
/// the Helm chart's pods with `checkpoints.url` set. Each partition's state follows it from
/// node to node (claimed with a higher epoch by each new owner).
#[test]
fn a_node_joining_or_leaving_every_5_s_with_checkpoints_in_s3_loses_nothing() {
    let _one_at_a_time = node_processes();
    let work = tempfile::tempdir().unwrap();
    let python = std::env::var("TESSERA_PYTHON").expect("TESSERA_PYTHON (scripts/test.sh sets it)");
    let s3 = tessera_suite::s3::S3Server::start(&python, "tessera").unwrap();
    let mut scenario = scenario(6, "join-leave-s3", work.path());
    scenario.config.state.dir = None;
    scenario.config.state.url = Some("s3://tessera/site-a".into());
    scenario.config.state.object_store = s3.options();
    join_and_leave(scenario, work.path(), "mock cluster, checkpoints in S3");
    drop(s3);
}

fn join_and_leave(scenario: Scenario, work: &Path, broker: &str) {
    let Scenario { kafka: _kafka, brokers, producer_settings, config, steps, total, expected_digest, expected_alerts } =
        scenario;

    let started = Instant::now();
    let mut started_nodes = 0;
    let mut start = || {
        started_nodes += 1;
        NodeProcess::start(&config, None, work, started_nodes)
    };
    let steady = [start(), start()];
    let mut third: Option<NodeProcess> = None;
    let publisher = publish_over_with(&brokers, &steps, flow_duration(), producer_settings);
    let (mut outputs, mut changes) = (Vec::new(), 0);
    let mut next_change = Instant::now() + Duration::from_secs(5);
    while !publisher.is_finished() {
        if Instant::now() >= next_change {
            match third.take() {
                None => third = Some(start()),
                Some(node) => {
                    let (status, out) = node.stop(Duration::from_secs(120));
                    assert!(status.success(), "the leaving node stops cleanly: {status}\n{out}");
                    outputs.push(out);
                }
            }
            changes += 1;
            next_change += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    publisher.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while (covered(&config, "telemetry") as u64) < total {
        assert!(
            Instant::now() < deadline,
            "the checkpoints cover {} of {total} messages after 300 s",
            covered(&config, "telemetry")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in steady.into_iter().chain(third) {
        let (status, out) = node.stop(Duration::from_secs(120));
        assert!(status.success(), "a node stops cleanly: {status}\n{out}");
        outputs.push(out);
    }
    let elapsed = started.elapsed();

    let site = site_state(&config);
    let (lost, counted_twice) = (total.saturating_sub(site.digest.rows_in), site.digest.rows_in.saturating_sub(total));
    let read_again = outputs.iter().map(|o| consumed(o)).sum::<u64>().saturating_sub(total);
    let restored = outputs.iter().flat_map(|o| o.lines()).filter(|l| l.contains("fault: restored ")).count();
    let (end, got) = alerts_sent(&brokers);
    println!(
        "fault: a node joining or leaving every 5 s ({broker}): {total} readings over 6 partitions, {changes} membership changes, {restored} partition checkpoints adopted, {elapsed:.1?}; \
         lost {lost}, counted twice {counted_twice}, read again {read_again}; longest stall of a partition that stayed {} ms (readings arrive every 100 ms); \
         longest rebalance callback {} ms; {end} alert events ({} distinct, reference {})",
        longest_ms(&outputs, "longest stall "),
        longest_ms(&outputs, "longest rebalance "),
        got.len(),
        expected_alerts.len(),
    );
    let total_of = |label: &str| -> u64 {
        outputs
            .iter()
            .flat_map(|o| o.lines())
            .filter(|l| l.starts_with("fault: stopped after"))
            .filter_map(|l| l.split(label).next()?.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let (skipped, delivered_again) = (total_of(" offsets skipped"), total_of(" delivered again and dropped"));
    println!(
        "fault: join/leave ({broker}): {skipped} offsets skipped, {delivered_again} messages delivered again and dropped"
    );
    assert_eq!(skipped, 0, "no node found offsets missing in what the broker delivered");
    let off = partitions_off(&brokers, &config.ingest.group_id, &config);
    // To look into a failure: TESSERA_FAULT_DUMP=<dir> keeps every node's output there.
    if let (false, Ok(dump)) = (off.is_empty(), std::env::var("TESSERA_FAULT_DUMP")) {
        for (i, o) in outputs.iter().enumerate() {
            std::fs::write(format!("{dump}/node-{i}.txt"), o).unwrap();
        }
    }
    assert_eq!(off, Vec::<String>::new(), "each partition's checkpoint holds exactly its messages");
    assert!(changes >= 2, "the readings flowed long enough for a join and a leave");
    assert_eq!((lost, counted_twice), (0, 0));
    assert_eq!(site.digest, expected_digest, "the final state equals the uninterrupted run's");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected_alerts.keys().collect::<Vec<_>>(),
        "the alerts are the uninterrupted run's"
    );
}

/// Resident memory of a process, current and peak (`VmRSS`, `VmHWM`), in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Overload: a node's capacity is measured on a backlog; then readings arrive at twice that
/// rate. The node keeps under its configured memory budget (backpressure: it pauses its
/// partitions, and keeps polling), is never thrown out of its group (`max.poll.interval.ms`
/// is 6 s here), and once the input falls back the lag drains, with every reading counted once.
#[test]
fn twice_the_capacity_stays_in_budget_and_the_lag_drains() {
    let _one_at_a_time = node_processes();
    // 24 partitions keep the lag within what the mock cluster keeps of a partition (100 000
    // messages or 5 MB, some 70 000 readings; it drops the oldest beyond that, which the node
    // reports as offsets skipped).
    let (kafka, brokers) = crate::embedded_kafka(1, 24);
    for topic in ["alerts", "late"] {
        kafka.create_topic(topic, 1).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let mut config = node_config(&brokers, &work.path().join("state"));
    config.ingest.group_id = "overload".into();
    config.ingest.kafka.insert("max.poll.interval.ms".into(), "6000".into());
    // A heavier rule set (each reading in twenty hopping windows of two queries, raw rows
    // kept): the test's own producer, sharing the machine's two cores, must outrun the node
    // at least 1.5 times over (one such query was no longer enough once the ingest got cheaper).
    for (name, column) in [("wide", "current_a"), ("wide_voltage", "voltage_v")] {
        config.detect.queries.push(format!(
            "CREATE CONTINUOUS QUERY {name} AS SELECT motor_id, window_start, count(DISTINCT seq) AS n, max({column}) AS peak
             FROM HOP(telemetry, ts, INTERVAL '1 second', INTERVAL '10 seconds') GROUP BY motor_id, window_start"
        ));
    }
    let backlog: u64 = 200_000;
    let start_ms = tessera_core::now_ms() - 3_600_000;
    let mut sim = Simulator::new(FleetSpec {
        motors: MOTORS,
        sites: 3,
        rate_hz: 10.0,
        steps: u64::MAX / 2,
        start_ms,
        fault_fraction: 0.1,
        seed: 7,
    });
    let mut take =
        |readings: u64| -> Vec<Vec<Reading>> { (0..readings / MOTORS as u64).map_while(|_| sim.next_step()).collect() };

    // 1. Capacity: a fresh node reads a backlog as fast as it can.
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
    take(backlog).iter().for_each(|s| p.send_readings(s).unwrap());
    p.flush(Duration::from_secs(60)).unwrap();
    let node = NodeProcess::start(&config, None, work.path(), 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut first, mut calibration_peak) = (None, 0);
    loop {
        let covered = covered(&config, "telemetry") as u64;
        calibration_peak = calibration_peak.max(memory_of(node.process.id()).1);
        if covered > 0 && first.is_none() {
            first = Some((Instant::now(), covered));
        }
        if covered >= backlog {
            break;
        }
        assert!(Instant::now() < deadline, "the backlog was not read in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (since, at) = first.expect("progress");
    let capacity = (backlog - at) as f64 / since.elapsed().as_secs_f64().max(0.1);
    let (status, out) = node.stop(Duration::from_secs(120));
    assert!(status.success(), "{status}\n{out}");

    // 2. Twice the capacity, for as long as the lag stays within the mock cluster's log.
    let budget_mb = (calibration_peak >> 20) + 64;
    config.ingest.memory_budget_mb = budget_mb;
    let node = NodeProcess::start(&config, None, work.path(), 2);
    // At most 360 000 readings (twice the capacity for up to 15 s): on a fast machine a longer
    // flood would only test the mock cluster's log limits and the test's own producer, which
    // shares the two cores with the node.
    let over = Duration::from_secs_f64((180_000.0 / capacity).clamp(3.0, 15.0));
    let load = take((2.0 * capacity * over.as_secs_f64()) as u64);
    let sent: u64 = load.iter().map(|s| s.len() as u64).sum();
    let total = backlog + sent;
    let started = Instant::now();
    let publisher = publish_over(&brokers, &load, over);
    let mut peak_rss = 0;
    while !publisher.is_finished() {
        peak_rss = peak_rss.max(memory_of(node.process.id()).0);
        std::thread::sleep(Duration::from_millis(50));
    }
    publisher.join().unwrap();
    let produced_for = started.elapsed();
    let lag_at_end = total.saturating_sub(covered(&config, "telemetry") as u64);

    // 3. The input stops: the lag drains.
    let deadline = Instant::now() + Duration::from_secs(300);
    while (covered(&config, "telemetry") as u64) < total {
        peak_rss = peak_rss.max(memory_of(node.process.id()).0);
        if Instant::now() > deadline {
            let covered = covered(&config, "telemetry");
            let (_, out) = node.stop(Duration::from_secs(120));
            panic!(
                "the lag did not drain in 300 s: checkpoints cover {covered} of {total} readings; the node printed:\n{out}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained_in = started.elapsed() - produced_for;
    let node_peak = memory_of(node.process.id()).1;
    let (status, out) = node.stop(Duration::from_secs(120));
    assert!(status.success(), "{status}\n{out}");
    // "N <label>" in the node's last line.
    let stat = |label: &str| {
        out.lines()
            .find_map(|l| l.split(label).next()?.rsplit(' ').next()?.parse::<u64>().ok().filter(|_| l.contains(label)))
            .unwrap_or(u64::MAX)
    };
    let (rebalances, pauses, errors, skipped) =
        (stat(" rebalances"), stat(" memory pauses"), stat(" consumer errors"), stat(" offsets skipped"));
    println!(
        "fault: overload: capacity {capacity:.0} readings/s (debug build, measured on a {backlog}-reading backlog); then {sent} readings in {produced_for:.1?} \
         ({:.0}/s, {:.1}x capacity); lag at the end of it {lag_at_end}, drained {drained_in:.1?} later; peak RSS {} MiB sampled ({} MiB high-water) \
         against a budget of {budget_mb} MiB (calibration peak {} MiB + 64); {pauses} memory pauses; {rebalances} rebalances (the first assignment and the \
         final revoke), {errors} consumer errors",
        sent as f64 / produced_for.as_secs_f64(),
        sent as f64 / produced_for.as_secs_f64() / capacity,
        peak_rss >> 20,
        node_peak >> 20,
        calibration_peak >> 20,
    );
    assert_eq!(skipped, 0, "the mock cluster's log kept every reading until it was read\n{out}");
    assert_eq!(partitions_off(&brokers, "overload", &config), Vec::<String>::new(), "every reading counted once");
    assert!(node_peak >> 20 <= budget_mb, "high-water {} MiB over the {budget_mb} MiB budget\n{out}", node_peak >> 20);
    assert!(sent as f64 / produced_for.as_secs_f64() > 1.5 * capacity, "the input reached at least 1.5x capacity");
    assert!(lag_at_end > 0, "the node fell behind");
    assert_eq!((rebalances, errors), (2, 0), "never thrown out of the group\n{out}");
}

/// A query whose anomaly function panics on one motor's windows (a failpoint makes it, as a
/// bug some input triggers would) is isolated: the run is retried motor by motor, only that
/// motor's windows go to the detection stage's dead-letter topic (reason `query_failed`, the
/// panic's message, the windows as Arrow IPC), every other motor's windows are scored, and the
/// node keeps running and checkpointing.
#[test]
fn a_query_that_panics_on_one_motor_is_isolated_and_the_node_goes_on() {
    let _one_at_a_time = node_processes();
    let (kafka, brokers) = broker();
    kafka.create_topic("detect-dead-letters", 1).unwrap();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let mut config = node_config(&brokers, &state);
    config.ingest.group_id = "query-poison".into();
    config.detect.dead_letter_topic = "detect-dead-letters".into();
    let mut sim = Simulator::new(FleetSpec {
        motors: 20,
        sites: 1,
        rate_hz: 10.0,
        steps: 300,
        start_ms: tessera_core::now_ms() - 30_000,
        fault_fraction: 0.0,
        seed: 5,
    });
    let steps: Vec<Vec<Reading>> = std::iter::from_fn(|| sim.next_step()).collect();
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).unwrap();
    steps.iter().for_each(|s| p.send_readings(s).unwrap());
    p.flush(Duration::from_secs(30)).unwrap();
    let readings: u64 = steps.iter().map(|s| s.len() as u64).sum();

    let node = NodeProcess::start_with(&config, None, Some("anomaly-invoke=return(M0007)"), work.path(), 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (covered(&config, "telemetry") as u64) < readings {
        assert!(Instant::now() < deadline, "the node did not get through the input in 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, out) = node.stop(Duration::from_secs(120));
    assert!(status.success(), "the node kept running and stopped cleanly: {status}\n{out}");

    // Every dead letter holds windows of M0007 only, with the reason and the panic's message.
    let end = committed_and_end(&brokers, "query-poison-reader", "detect-dead-letters", 1).unwrap()[0].2 as usize;
    let dead = read_topic(&brokers, "detect-dead-letters", end, Duration::from_secs(30)).unwrap();
    let mut windows = 0;
    for m in &dead {
        assert_eq!(
            tessera_suite::header(m, tessera_ingest::dead_letter_headers::REASON).as_deref(),
            Some("query_failed")
        );
        let detail = tessera_suite::header(m, tessera_ingest::dead_letter_headers::DETAIL).unwrap_or_default();
        assert!(detail.contains("injected poison (motor M0007)"), "{detail}");
        let reader =
            datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(payload(m)), None).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch
                .column_by_name("motor_id")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap()
                .clone();
            assert!(ids.iter().all(|id| id == Some("M0007")), "only the poison motor's windows are parked");
            windows += batch.num_rows();
        }
    }
    let site = site_state(&config);
    println!(
        "fault: query poison: the anomaly function panicked on M0007's windows: {} dead letters ({windows} window rows, all of M0007, reason query_failed); \
         the node went on; {} of {readings} readings in the state",
        dead.len(),
        site.digest.rows_in
    );
    assert!(!dead.is_empty(), "the failing windows were parked");
    assert_eq!(site.digest.rows_in, readings);
}
