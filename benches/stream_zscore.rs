//! The peers' reference query (10 s tumbling aggregate + trailing 30-window z-score of the
//! vibration mean, ../shared/bench) as a Tessera continuous query, on the data set that
//! `../shared/bench/run.sh data` generates (telemetry.csv).
//!
//! - `--mode stage`: the window + anomaly stage alone, fed the data as in-memory Arrow
//!   batches of `--batch-rows` rows in arrival order (CSV parsing not timed); one thread.
//!   `--rules default` runs a node's default rule set and judges instead of the reference
//!   query (the same data; not the peers' query, so its figure is the stage's cost as shipped).
//! - `--mode kafka`: end to end: every reading is first produced to a topic of the embedded
//!   Kafka (librdkafka's mock cluster, `--partitions`), then the ingest + detection stage run
//!   from the first message until the last window closed; alert events are read back from the
//!   alerts topic as they come, and their latency (arrival on the topic − the window close
//!   that emitted them) is reported as p50/p99.
//!
//! Both print rows/s and the number of windows with z > 3 (the peers' zscore row count).
//!
//! `cargo bench --bench stream_zscore -- --data $BENCH_WORK/data-1000x10000 [--mode stage|kafka] [--rules reference|default] [--rounds 3]`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use rdkafka::Message as _;
use rdkafka::consumer::BaseConsumer;
use tessera_core::now_ms;
use tessera_core::{Reading, WatermarkPolicy};
use tessera_ingest::{Encoding, Ingest, IngestConfig, TopicConfig, readings_from_batch};
use tessera_node::detect::{Detect, DetectConfig, build_engine};
use tessera_stream::{AlertEvent, StreamConfig, StreamEngine, conform};
use tessera_suite::alerts_reader;
use tessera_suite::bench_history::{Better, record};
use tessera_suite::reference::{QUERY, count_hits};
use tessera_suite::{median, percentile};
use tessera_workload::embedded::EmbeddedKafka;
use tessera_workload::producer::{TelemetryProducer, WireFormat};

/// The peers' column names → Tessera's.
const RENAMES: &[(&str, &str)] = &[("site", "site_id"), ("vibration_rms", "vibration_x_rms"), ("rpm", "speed_rpm")];

struct Args {
    data: PathBuf,
    mode: String,
    rounds: u32,
    batch_rows: usize,
    partitions: i32,
    /// `reference`: the peers' query alone; `default`: a node's default rule set and judges
    /// (data quality, wear, shift), as `tessera node` runs them.
    rules: String,
}

fn args() -> Result<Args> {
    let work = std::env::var("BENCH_WORK").unwrap_or_else(|_| "/tmp/tessera-peer-bench".into());
    let mut a = Args {
        data: PathBuf::from(work).join("data-current"),
        mode: "stage".into(),
        rounds: 3,
        batch_rows: 8192,
        partitions: 128,
        rules: "reference".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--data" => a.data = it.next().context("--data DIR")?.into(),
            "--mode" => a.mode = it.next().context("--mode stage|kafka")?,
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--batch-rows" => a.batch_rows = it.next().context("--batch-rows N")?.parse()?,
            "--partitions" => a.partitions = it.next().context("--partitions N")?.parse()?,
            "--rules" => a.rules = it.next().context("--rules reference|default")?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// The CSV as telemetry batches in file (arrival) order.
fn load(args: &Args) -> Result<Vec<RecordBatch>> {
    let path = args.data.join("telemetry.csv");
    let file = std::fs::File::open(&path)
        .with_context(|| format!("{}: run ../shared/bench/run.sh data first", path.display()))?;
    let mut fields = vec![
        Field::new("motor_id", DataType::Utf8, false),
        Field::new("site", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
    ];
    for c in ["current_a", "voltage_v", "temperature_c", "vibration_rms", "rpm"] {
        fields.push(Field::new(c, DataType::Float64, false));
    }
    let reader = ReaderBuilder::new(Arc::new(Schema::new(fields)))
        .with_header(true)
        .with_batch_size(args.batch_rows)
        .build(file)?;
    let mut seq = 0;
    let mut out = Vec::new();
    for b in reader {
        let t = conform::to_telemetry(&b?, RENAMES, seq)?;
        seq += t.num_rows() as u64;
        out.push(t);
    }
    Ok(out)
}

fn max_ts(b: &RecordBatch) -> i64 {
    let ts = b.column(2).as_any().downcast_ref::<datafusion::arrow::array::TimestampMillisecondArray>().expect("ts");
    ts.values().iter().copied().max().unwrap_or(0)
}

fn stage(args: &Args) -> Result<()> {
    let batches = load(args)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    println!("stage: {rows} readings in {} batches of {} rows", batches.len(), args.batch_rows);
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let (queries, judges) = match args.rules.as_str() {
        "reference" => (vec![QUERY], false),
        "default" => (tessera_node::detect::rules::DEFAULT_RULES.to_vec(), true),
        other => bail!("unknown --rules {other} (reference or default)"),
    };
    println!("rules: {}", args.rules);
    let mut times = Vec::new();
    for round in 0..args.rounds {
        let config = StreamConfig {
            watermark: WatermarkPolicy { allowed_lateness_ms: 1_000, idle_timeout_ms: 1_000 },
            table_rows: 1_000_000,
            table_bytes: 64 << 20,
            telemetry_rows: 0,
            quality: judges.then(Default::default),
            wear: judges.then(Default::default),
            shift: judges.then(Default::default),
        };
        let mut engine = StreamEngine::new(config);
        for q in &queries {
            rt.block_on(engine.register(q))?;
        }
        let started = Instant::now();
        let mut last = 0;
        for b in &batches {
            // Processing time follows the data, so no motor is ever idle mid-stream.
            last = max_ts(b);
            rt.block_on(engine.push(b, last))?;
        }
        rt.block_on(engine.tick(last + 10_000))?; // end of input: the idle timeout closes the rest
        let secs = started.elapsed().as_secs_f64();
        let (windows, hits) = rt.block_on(count_hits(&engine))?;
        let late: u64 = engine.stats().windows.iter().map(|w| w.1.rows_late).sum();
        println!(
            "round {round}: {secs:.3} s, {:.0} readings/s, {windows} windows, {hits} with z > 3, {late} late readings",
            rows as f64 / secs
        );
        times.push(Duration::from_secs_f64(secs));
    }
    if !times.is_empty() {
        record("stream_zscore", "stage time, median of rounds", median(times).as_secs_f64(), "s", Better::Lower);
    }
    Ok(())
}

/// Reads the alert events available now; records each one's latency: arrival − window close.
fn read_latencies(alerts: &BaseConsumer, wait: Duration, latencies: &mut Vec<i64>) -> Result<()> {
    while let Some(m) = alerts.poll(wait) {
        let m = m?;
        let arrived = now_ms();
        if let Some(p) = m.payload() {
            let e: AlertEvent = serde_json::from_slice(p)?;
            latencies.push(arrived - e.emitted_at_ms);
        }
    }
    Ok(())
}

fn kafka(args: &Args) -> Result<()> {
    let batches = load(args)?;
    let readings: Vec<Reading> = batches.iter().flat_map(readings_from_batch).collect();
    drop(batches);
    // Event times are rebased to end now, so the ingest's event-time checks pass; by whole
    // 10 s, so the windows hold the same readings as the peers'.
    let shift = (now_ms() - readings.iter().map(|r| r.event_time_ms).max().unwrap_or(0)).div_euclid(10_000) * 10_000;
    let kafka = EmbeddedKafka::start(1)?;
    let brokers = kafka.bootstrap_servers();
    for round in 0..args.rounds {
        let topic = format!("telemetry-{round}");
        let detect = DetectConfig {
            queries: vec![QUERY.to_string()],
            allowed_lateness: Duration::from_secs(1),
            // Long enough that a consumer stall never closes a window early; the last window of
            // each motor closes by it after the input ends, outside the timed part.
            idle_timeout: Duration::from_secs(3),
            alerts_topic: format!("alerts-{round}"),
            late_topic: format!("late-{round}"),
            ..Default::default()
        };
        kafka.create_topic(&topic, args.partitions)?; // the mock keeps a few MB per partition: use many
        for t in [&detect.alerts_topic, &detect.late_topic] {
            kafka.create_topic(t, 1)?;
        }
        kafka.create_topic(&format!("dlq-{round}"), 1)?;
        let producer = TelemetryProducer::new(&brokers, &topic, WireFormat::Protobuf, &Default::default())?;
        let t0 = Instant::now();
        for chunk in readings.chunks(10_000) {
            let shifted: Vec<Reading> =
                chunk.iter().map(|r| Reading { event_time_ms: r.event_time_ms + shift, ..r.clone() }).collect();
            producer.send_readings(&shifted)?;
        }
        producer.flush(Duration::from_secs(120))?;
        println!("round {round}: produced {} readings in {:.1} s", readings.len(), t0.elapsed().as_secs_f64());

        let alerts = alerts_reader(&brokers, &format!("alerts-reader-{round}"), &detect.alerts_topic)?;
        let mut ingest_config = IngestConfig {
            brokers: brokers.clone(),
            group_id: format!("bench-{round}"),
            topics: vec![TopicConfig { name: topic.clone(), encoding: Encoding::ProtobufReading }],
            dead_letter_topic: format!("dlq-{round}"),
            ..Default::default()
        };
        ingest_config.validation.max_past_ms = 30 * 24 * 3_600_000;
        let engine = build_engine(&detect)?;
        let (tx, rx) = sync_channel(64);
        let ingest = Ingest::start(ingest_config, tx)?;
        let (stage, detect_loop) = Detect::prepare(engine, &detect, &brokers, rx)?;
        let detect_thread = tessera_node::lifecycle::StageThread::spawn(detect_loop)?;
        let mut first: Option<Instant> = None;
        let motors =
            readings.iter().map(|r| r.motor_id.as_str()).collect::<std::collections::HashSet<_>>().len() as u64;
        let expected_windows = readings
            .iter()
            .map(|r| (r.motor_id.as_str(), (r.event_time_ms + shift).div_euclid(10_000)))
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        let mut latencies: Vec<i64> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(900);
        let mut last_print = Instant::now();
        let done = loop {
            if first.is_none() && ingest.metrics().snapshot().messages > 0 {
                first = Some(Instant::now());
            }
            read_latencies(&alerts, Duration::from_millis(1), &mut latencies)?;
            let closed: u64 = stage.stats().engine.windows.iter().map(|w| w.1.windows_closed).sum();
            if last_print.elapsed() > Duration::from_secs(5) {
                last_print = Instant::now();
                let s = ingest.metrics().snapshot();
                eprintln!(
                    "  consumed {} messages, {} dead letters; {closed} of {expected_windows} windows closed",
                    s.messages, s.dead_letters_sent
                );
            }
            // Timed until every window but each motor's last (which only the idle timeout closes,
            // as only the end of input closes it in Flink) has closed.
            if closed + motors >= expected_windows {
                break Instant::now();
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "not done within 15 minutes ({closed} of {expected_windows} windows)"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        let secs = done.duration_since(first.unwrap_or(done)).as_secs_f64();
        while stage.stats().engine.windows.iter().map(|w| w.1.windows_closed).sum::<u64>() < expected_windows {
            anyhow::ensure!(Instant::now() < deadline, "the last windows did not close");
            std::thread::sleep(Duration::from_millis(50));
        }
        ingest.stop()?;
        stage.request_stop();
        let engine = detect_thread.join().map_err(|f| (*f).into_error())?;
        let drain = Instant::now() + Duration::from_secs(2);
        while Instant::now() < drain {
            read_latencies(&alerts, Duration::from_millis(20), &mut latencies)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let (windows, hits) = rt.block_on(count_hits(&engine))?;
        let late: u64 = engine.stats().windows.iter().map(|w| w.1.rows_late).sum();
        latencies.sort_unstable();
        println!(
            "round {round}: {secs:.2} s from first message to last window closed, {:.0} readings/s; {windows} windows, {hits} with z > 3, {late} late; \
             alert events {}: latency window close → alerts topic p50 {} ms, p99 {} ms, max {} ms",
            readings.len() as f64 / secs,
            latencies.len(),
            percentile(&latencies, 0.5).unwrap_or(-1),
            percentile(&latencies, 0.99).unwrap_or(-1),
            latencies.last().copied().unwrap_or(-1)
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = args()?;
    match args.mode.as_str() {
        "stage" => stage(&args),
        "kafka" => kafka(&args),
        other => bail!("unknown --mode {other} (stage or kafka)"),
    }
}
