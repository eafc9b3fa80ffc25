//! `tessera demo`: the whole ingest path on one machine with nothing installed. An embedded
//! Kafka (or `--brokers`), the simulator publishing a fleet in real time with injected faults
//! and a trickle of bad messages, the ingest building per-motor-shard Arrow batches, the
//! detection stage running the continuous queries (default and demo rules) and writing alerts;
//! per-motor statistics and the alerts beside the injected faults at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tessera_ingest::{Ingest, IngestConfig, IngestStats, TopicConfig};

use crate::bad_input::BadInput;
use crate::embedded::EmbeddedKafka;
use crate::detect::{build_engine, Detect, DetectConfig};
use crate::fleet_stats::FleetStats;
use crate::producer::{now_ms, TelemetryProducer, WireFormat};
use crate::simulate::{FleetSpec, Simulator};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Motors in the fleet.
    pub motors: u32,
    /// Sites they are spread over.
    pub sites: u32,
    /// Readings per second per motor.
    pub rate_hz: f64,
    /// How long to run (Ctrl-C stops earlier).
    pub duration: Duration,
    /// Share of motors with an injected fault.
    pub fault_fraction: f64,
    /// Seed of the simulator.
    pub seed: u64,
    /// Motors to list in the final table.
    pub show: usize,
    /// Message encoding.
    pub format: WireFormat,
    /// One bad message per this many good ones (0: none).
    pub bad_every: u64,
    /// A real Kafka instead of the embedded one.
    pub brokers: Option<String>,
}

/// What the demo saw.
#[derive(Debug)]
pub struct DemoReport {
    /// Good messages published.
    pub published: u64,
    /// Bad messages published.
    pub bad_published: u64,
    /// The ingest's counters.
    pub ingest: IngestStats,
    /// Alert events written.
    pub alerts: u64,
    /// Per-motor statistics of the batches.
    pub fleet: FleetStats,
}


/// Runs the demo until `duration` passes or `stop` is set; prints as it goes.
pub fn run(opts: &DemoOptions, stop: &AtomicBool) -> Result<DemoReport> {
    let embedded = match &opts.brokers {
        Some(_) => None,
        None => Some(EmbeddedKafka::start(3)?),
    };
    let brokers = match (&opts.brokers, &embedded) {
        (Some(b), _) => b.clone(),
        (None, Some(k)) => k.bootstrap_servers(),
        (None, None) => unreachable!("one of the two is set"),
    };
    let (topic, dead_letters) = ("telemetry", "telemetry-dead-letter");
    if let Some(k) = &embedded {
        k.create_topic(topic, 6)?;
        k.create_topic(dead_letters, 1)?;
        k.create_topic("tessera-alerts", 3)?;
        k.create_topic("tessera-late", 1)?;
        println!("embedded Kafka: librdkafka mock cluster, 3 brokers at {brokers}");
    }
    let config = IngestConfig {
        brokers: brokers.clone(),
        group_id: "tessera-demo".into(),
        topics: vec![TopicConfig { name: topic.into(), encoding: tessera_ingest::Encoding::ProtobufReading }],
        dead_letter_topic: dead_letters.into(),
        batch_max_age: Duration::from_millis(500),
        ..Default::default()
    };
    let detect_config = DetectConfig {
        queries: crate::rules::DEFAULT_RULES.iter().chain(crate::rules::DEMO_RULES).map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    if embedded.is_none() {
        crate::topics::ensure_topics(&brokers, &[(dead_letters, 1), (&detect_config.alerts_topic, 3), (&detect_config.late_topic, 1), (&detect_config.dead_letter_topic, 1)])?;
    }
    let engine = build_engine(&detect_config)?;
    for q in engine.queries() {
        println!("continuous query {} on {}", q.name, tessera_stream::engine::describe(&q.window));
    }
    let (tx, rx) = sync_channel(64);
    let (detect_tx, detect_rx) = sync_channel(64);
    let ingest = Ingest::start(config, tx).context("starting the ingest")?;
    // Per-motor batch statistics on the way to the detection stage.
    let stats = std::sync::Arc::new(std::sync::Mutex::new(FleetStats::default()));
    let tee_stats = stats.clone();
    let sink = std::thread::Builder::new().name("tessera-demo-stats".into()).spawn(move || {
        for b in rx {
            tee_stats.lock().expect("not poisoned").add_batch(b.shard, &b.batch);
            if detect_tx.send(b).is_err() {
                break;
            }
        }
    })?;
    let detect = Detect::start(engine, &detect_config, &brokers, detect_rx)?;
    let producer = TelemetryProducer::new(&brokers, topic, opts.format, &Default::default())?;

    let steps = (opts.duration.as_secs_f64() * opts.rate_hz).ceil().max(1.0) as u64;
    let start_ms = now_ms();
    let mut sim = Simulator::new(FleetSpec {
        motors: opts.motors,
        sites: opts.sites,
        rate_hz: opts.rate_hz,
        steps,
        start_ms,
        fault_fraction: opts.fault_fraction,
        seed: opts.seed,
    });
    println!(
        "simulating {} motors on {} sites at {} Hz for {:?}; {} injected faults:",
        opts.motors, opts.sites, opts.rate_hz, opts.duration, sim.ground_truth().len()
    );
    for f in sim.ground_truth().iter().take(12) {
        println!("  {} {:<8} {:?} from +{}s to +{}s", f.motor_id, f.site_id, f.fault, (f.start_ms - start_ms) / 1000, (f.end_ms - start_ms) / 1000);
    }

    let started = Instant::now();
    let mut last_print = Instant::now();
    let (mut published, mut bad_published, mut step) = (0u64, 0u64, 0u64);
    let bad_kinds = BadInput::all(600_000);
    while !stop.load(Ordering::Relaxed) {
        let due = Duration::from_secs_f64(step as f64 / opts.rate_hz);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait.min(Duration::from_millis(200)));
            if due > started.elapsed() {
                continue;
            }
        }
        let Some(readings) = sim.next_step() else { break };
        producer.send_readings(&readings)?;
        for r in &readings {
            published += 1;
            if opts.bad_every > 0 && published % opts.bad_every == 0 {
                let kind = bad_kinds[(bad_published % bad_kinds.len() as u64) as usize];
                let (payload, content_type) = kind.encode(r, now_ms());
                producer.send_raw(Some(r.motor_id.as_str().as_bytes()), &payload, Some(content_type))?;
                bad_published += 1;
            }
        }
        step += 1;
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            print_progress(started, &ingest.metrics().snapshot(), &stats.lock().expect("not poisoned"));
            let d = detect.stats();
            println!("         windows closed {} | alert events {} ({} open) | late readings {}", d.engine.windows.iter().map(|w| w.1.windows_closed).sum::<u64>(), d.alerts_sent, d.engine.alerts_open, d.late_sent);
        }
        anyhow::ensure!(!ingest.is_finished(), "the ingest stopped unexpectedly");
    }

    producer.flush(Duration::from_secs(30))?;
    let expected = producer.sent();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ingest.metrics().snapshot().messages < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ingest_stats = ingest.stop()?;
    sink.join().map_err(|_| anyhow::anyhow!("the stats thread panicked"))?;
    let alerts_sent = detect.stats().alerts_sent;
    let engine = detect.stop()?;
    let fleet = std::mem::take(&mut *stats.lock().expect("not poisoned"));
    print_progress(started, &ingest_stats, &fleet);
    println!("\nper-motor batch statistics (first {} motors by id):\n{}", opts.show, fleet.table(opts.show));
    println!(
        "published {published} readings + {bad_published} bad messages; ingested {} readings ({} unique) in {} batches; dead-lettered {} ({})",
        fleet.rows,
        fleet.unique_rows(),
        fleet.batches,
        ingest_stats.dead_letters_sent,
        reasons(&ingest_stats)
    );
    print_alerts(&engine, &sim)?;
    drop(producer);
    drop(embedded);
    Ok(DemoReport { published, bad_published, ingest: ingest_stats, alerts: alerts_sent, fleet })
}

/// The alerts (queried from the engine's `alerts` table) beside the injected faults.
fn print_alerts(engine: &tessera_stream::StreamEngine, sim: &Simulator) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let alerts = rt.block_on(engine.sql(
        "SELECT motor_id, min(window_start) AS first_alert, max(severity) AS severity, round(max(peak_score), 1) AS peak \
         FROM alerts WHERE state = 'open' OR state = 'update' GROUP BY motor_id ORDER BY first_alert LIMIT 20",
    ))?;
    println!("\nalerts (SELECT ... FROM alerts), first 20 motors:\n{}", datafusion::arrow::util::pretty::pretty_format_batches(&alerts)?);
    let alerted: std::collections::BTreeSet<String> = rt
        .block_on(engine.sql("SELECT DISTINCT motor_id FROM alerts"))?
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<arrow_array::StringArray>().cloned();
            a.into_iter().flat_map(|a| a.iter().flatten().map(String::from).collect::<Vec<_>>())
        })
        .collect();
    let faulty: std::collections::BTreeSet<String> = sim.ground_truth().iter().map(|f| f.motor_id.clone()).collect();
    let caught = faulty.iter().filter(|m| alerted.contains(*m)).count();
    println!(
        "{} motors alerted; {} of {} motors with an injected fault among them; {} alerted motors without one",
        alerted.len(),
        caught,
        faulty.len(),
        alerted.iter().filter(|m| !faulty.contains(*m)).count()
    );
    Ok(())
}

fn reasons(s: &IngestStats) -> String {
    if s.rejected_by_reason.is_empty() {
        return "no rejections".into();
    }
    s.rejected_by_reason.iter().map(|(code, n)| format!("{code}: {n}")).collect::<Vec<_>>().join(", ")
}

fn print_progress(started: Instant, s: &IngestStats, fleet: &FleetStats) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "[{:>5.1}s] consumed {} msgs ({:.0}/s) | {} readings in {} batches | {} motors | dead letters {} | commits {} | pauses {}",
        secs,
        s.messages,
        s.messages as f64 / secs.max(1e-9),
        fleet.rows,
        fleet.batches,
        fleet.motors.len(),
        s.dead_letters_sent,
        s.commits,
        s.pauses
    );
}
