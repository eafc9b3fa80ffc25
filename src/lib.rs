//! Test and benchmark harness shared by `tests/it` and `benches/`: a real Kafka broker
//! process (Tansu), an S3-compatible object store process (moto, [`s3`]), a headless Chromium
//! over WebDriver ([`browser`]), topic creation, publishing a simulated fleet with its
//! checksum, collecting what the ingest hands on, the benches' result history
//! ([`bench_history`]), their reference query ([`reference`]), whole nodes fed by gateway
//! batches ([`gateway_node`]) and the fleet at scale simulated in one process ([`fleet_sim`]).

pub mod bench_history;
pub mod browser;
pub mod fleet_sim;
pub mod fleet_stats;
pub mod gateway_node;
pub mod reference;
pub mod s3;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use fleet_stats::FleetStats;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message};
use tessera_ingest::ShardBatch;
use tessera_workload::producer::{TelemetryProducer, WireFormat};
use tessera_workload::simulate::{FleetSpec, Simulator};

/// A Tansu broker (Apache-Kafka-compatible, in-memory storage) running as a child process
/// on a free loopback port. Killed when dropped.
pub struct TansuBroker {
    child: Child,
    port: u16,
}

impl TansuBroker {
    /// Finds `tansu` (`$TANSU_BIN`, `$PATH`, `~/.cargo/bin`) and starts it.
    pub fn start() -> Result<Self> {
        let bin = find_tansu().context("the tansu broker is not installed: run scripts/setup.sh")?;
        let port = tessera_workload::ports::spare_loopback_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        record_pid("tansu", child.id());
        let mut broker = TansuBroker { child, port };
        wait_listening(&mut broker.child, port, "tansu", Duration::from_secs(30))?;
        Ok(broker)
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                forget_pid("tansu", pid);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        forget_pid("tansu", pid);
    }
}

/// Waits until `child` (`what`) listens on loopback `port`; an error if it exits first or
/// takes longer than `within`.
fn wait_listening(child: &mut Child, port: u16, what: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start: {status}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// With `TESSERA_PID_DIR` set (scripts/test.sh sets it), each server process the harness starts
/// is recorded there as `<kind>-<pid>` (`tansu`, `moto`, `chromedriver`, `chromium`) until it is reaped, so
/// that the script can stop, by id, what a crashed test run left behind.
pub fn record_pid(kind: &str, pid: u32) {
    if let Some(dir) = std::env::var_os("TESSERA_PID_DIR") {
        let _ = std::fs::write(PathBuf::from(dir).join(format!("{kind}-{pid}")), pid.to_string());
    }
}

/// Forgets a process recorded by [`record_pid`] once it is reaped.
pub fn forget_pid(kind: &str, pid: u32) {
    if let Some(dir) = std::env::var_os("TESSERA_PID_DIR") {
        let _ = std::fs::remove_file(PathBuf::from(dir).join(format!("{kind}-{pid}")));
    }
}

fn find_tansu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join("tansu")).find(|p| p.is_file())
}

/// What a publish run sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Readings sent.
    pub readings: u64,
    /// Wrapping sum of their fingerprints.
    pub checksum: u64,
}

/// The fleet used by tests: `motors` motors × `steps` readings at 10 Hz, ending now.
pub fn test_fleet(motors: u32, steps: u64, seed: u64) -> Simulator {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64;
    Simulator::new(FleetSpec {
        motors,
        sites: 3,
        rate_hz: 10.0,
        steps,
        start_ms: now - (steps as i64) * 100,
        fault_fraction: 0.05,
        seed,
    })
}

/// Publishes every step of `sim` (optionally stopping after `max_steps`) and waits for delivery.
pub fn publish(sim: &mut Simulator, producer: &TelemetryProducer, max_steps: Option<u64>) -> Result<Published> {
    let mut out = Published { readings: 0, checksum: 0 };
    let mut steps = 0;
    while max_steps.is_none_or(|m| steps < m) {
        let Some(readings) = sim.next_step() else { break };
        producer.send_readings(&readings)?;
        for r in &readings {
            out.readings += 1;
            out.checksum = out.checksum.wrapping_add(r.fingerprint());
        }
        steps += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(out)
}

/// A producer for `topic` in `format`.
pub fn producer(brokers: &str, topic: &str, format: WireFormat) -> Result<TelemetryProducer> {
    Ok(TelemetryProducer::new(brokers, topic, format, &Default::default())?)
}

/// Receives and acknowledges batches until `unique` distinct readings have arrived, or
/// `timeout` passes, or the senders are gone; returns what arrived.
pub fn collect_until(batches: &Receiver<ShardBatch>, stats: &mut FleetStats, unique: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while stats.unique_rows() < unique {
        let left = deadline.saturating_duration_since(Instant::now());
        match batches.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(b) => {
                stats.add_batch(b.shard, &b.batch);
                b.ack.ack();
            }
            Err(RecvTimeoutError::Timeout) if !left.is_zero() => {}
            Err(_) => return,
        }
    }
}

/// Reads `count` messages from `topic` (from the beginning, fresh group), or fails after
/// `timeout`.
pub fn read_topic(brokers: &str, topic: &str, count: usize, timeout: Duration) -> Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}-{}", topic, std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count {
        if Instant::now() > deadline {
            bail!("read {} of {count} messages from {topic} before the deadline", out.len());
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(m?.detach());
        }
    }
    // Anything beyond `count` would be a bug in the caller's expectations: look briefly.
    let extra_deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < extra_deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(m?.detach());
        }
    }
    Ok(out)
}

/// A consumer of partition 0 of `topic` from its beginning, for reading alert events as they
/// come: assigned, not subscribed (a group join takes the mock cluster seconds, and alerts
/// produced meanwhile would count that wait as their latency), fetching with short waits.
pub fn alerts_reader(brokers: &str, group: &str, topic: &str) -> Result<BaseConsumer> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .set("fetch.queue.backoff.ms", "1")
        .create()?;
    let mut partition = rdkafka::TopicPartitionList::new();
    partition.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    reader.assign(&partition)?;
    Ok(reader)
}

/// The offsets a group committed, per partition of `topic`, and the topic's end offsets.
pub fn committed_and_end(brokers: &str, group: &str, topic: &str, partitions: i32) -> Result<Vec<(i32, i64, i64)>> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    (0..partitions)
        .map(|p| {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            let c = committed.find_partition(topic, p).and_then(|e| e.offset().to_raw()).unwrap_or(-1);
            Ok((p, c, high))
        })
        .collect()
}

/// How many partitions the brokers at `brokers` say `topic` has (0 if it does not exist).
pub fn partitions_of(brokers: &str, topic: &str) -> Result<usize> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .sum())
}

/// A header's value as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The payload of a message.
pub fn payload(m: &OwnedMessage) -> &[u8] {
    m.payload().unwrap_or_default()
}

/// One reading of each motor in `motors` (ids `M000000`…), step `r` at event time `t_ms`, in
/// the telemetry schema: what the engine benches push. Every channel is a healthy running
/// motor's level (20 A, 400 V, 60 °C, vibration 1 mm/s RMS in zone A/B, 1480 rpm) with ±1 %
/// noise, so no judge alarms.
pub fn noisy_step(motors: std::ops::Range<usize>, r: i64, t_ms: i64) -> Result<arrow_array::RecordBatch> {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use tessera_core::Channel;

    let mut fields = vec![Field::new("motor_id", DataType::Utf8, false), Field::new("ts", DataType::Int64, false)];
    fields.extend(Channel::ALL.iter().map(|c| Field::new(c.name(), DataType::Float64, true)));
    const LEVELS: [f64; 7] = [20.0, 400.0, 60.0, 1.0, 1.0, 1.0, 1480.0];
    // A hash of (motor, step, channel), uniform in [-0.5, 0.5): a congruence in the step
    // repeated itself every 48 steps, which at a reading every 30 minutes is a day.
    let noise = |m: usize, c: usize| {
        let key = ((m as u64) << 32) ^ ((r as u64) << 8) ^ c as u64;
        (xxhash_rust::xxh3::xxh3_64(&key.to_le_bytes()) % 1000) as f64 / 1000.0 - 0.5
    };
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(motors.clone().map(|m| format!("M{m:06}")))),
        Arc::new(Int64Array::from_iter_values(motors.clone().map(|_| t_ms))),
    ];
    for (c, level) in LEVELS.iter().enumerate().take(Channel::ALL.len()) {
        columns
            .push(Arc::new(Float64Array::from_iter_values(motors.clone().map(|m| level * (1.0 + 0.02 * noise(m, c))))));
    }
    let raw = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok(tessera_stream::conform::to_telemetry(&raw, &[], 0)?)
}

/// Resident memory of this process, bytes (`/proc/self/statm`; 0 where it cannot be read).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// The environment variable that names the folder of the shared labelled data sets.
pub const DATA_DIR_VAR: &str = "TESSERA_DATA_DIR";

/// The folder of the shared labelled data sets (SKAB, NAB): `$TESSERA_DATA_DIR`, else
/// `../shared/data` beside the checkout. They are read from there, never copied into the repo
/// (SKAB is GPL-3.0).
pub fn shared_data_dir() -> PathBuf {
    std::env::var_os(DATA_DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

/// `relative` inside [`shared_data_dir`]; panics with how to get the data when it is absent.
pub fn shared_data(relative: &str) -> PathBuf {
    let dir = shared_data_dir();
    let path = dir.join(relative);
    assert!(path.exists(), "{}", missing_data_message(&dir, &path));
    path
}

/// What a test says when the shared data is not where it looks.
pub fn missing_data_message(dir: &std::path::Path, missing: &std::path::Path) -> String {
    format!(
        "{} is missing. The labelled data sets are read from {} (set {DATA_DIR_VAR} to another copy): \
         skab/valve1/0.csv … 15.csv, skab/anomaly-free/anomaly-free.csv and skab/labels.json from SKAB \
         (https://github.com/waico/SKAB, GPL-3.0), nab/ambient_temperature_system_failure.csv and \
         nab/labels.json from NAB (https://github.com/numenta/NAB); they are never copied into this repository",
        missing.display(),
        dir.display()
    )
}

/// A benchmark's numeric flag (`--name N`) from the command line, or `default`.
pub fn bench_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `p` quantile (0–1, nearest rank) of `sorted` latencies; `None` when there are none.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    sorted.get(((sorted.len().max(1) - 1) as f64 * p).round() as usize).copied()
}

/// The median of measured durations (the upper one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
