//! `tessera`: the command line. Each subcommand parses its flags and calls the library.
//! [`run`] is the whole program (the binary's `main` only calls it), so that tests run the
//! very commands users run, signals included.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use crate::config::{NodeConfig, TelemetryConfig};
use crate::control::{self, ControlCommand};
use crate::demo::{self, DemoOptions};
use crate::detect::build_engine;
use crate::node::Node;
use crate::eval::{self, EvalOptions};
use crate::producer::{now_ms, TelemetryProducer, WireFormat};
use crate::replay::{self, ReplayOptions, Target};
use crate::simulate::{FleetSpec, Simulator};
use crate::topics::ensure_topics;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Distributed stream processing for industrial motor telemetry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on one machine: embedded Kafka, 3 sites in one Raft group, a simulated fleet
    /// with faults, continuous queries, alerts, Flight SQL on 127.0.0.1. Ctrl-C stops it.
    Demo {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Publish one bad message per this many readings (0: none).
        #[arg(long, default_value_t = 5000)]
        bad_every: u64,
        /// Use this Kafka instead of the embedded one.
        #[arg(long)]
        brokers: Option<String>,
        /// Site i's Flight SQL endpoint listens on 127.0.0.1 at this port plus i (0: any free port).
        #[arg(long, default_value_t = 50051)]
        sql_port: u16,
        /// Site i's /metrics and health checks at this port plus i (0: any free port).
        #[arg(long, default_value_t = 9464)]
        http_port: u16,
        /// Export traces to this OTLP/gRPC collector (e.g. http://127.0.0.1:4317).
        #[arg(long)]
        otlp_endpoint: Option<String>,
        /// Stop when the simulated span ends instead of serving SQL until Ctrl-C.
        #[arg(long)]
        exit_when_done: bool,
    },
    /// mTLS certificates: the cluster CA, node and operator certificates.
    #[command(subcommand)]
    Cert(crate::cert::CertCommand),
    /// The site-local store: key-encryption keys, segments, shredding.
    #[command(subcommand)]
    Store(crate::storage::StoreCommand),
    /// Run one SQL query against a node's Flight SQL endpoint and print the result.
    Sql(crate::sql::SqlArgs),
    /// Hash a secret read from stdin for the `[sql]` config: an Argon2id `password_hash` for
    /// `[[sql.users]]`, or the `sha256` of a bearer token for `[[sql.tokens]]`.
    HashSecret {
        /// `password` or `token`.
        #[arg(value_parser = ["password", "token"])]
        kind: String,
    },
    /// Publish a simulated fleet's telemetry to Kafka, with injected faults and ground truth.
    Simulate {
        #[command(flatten)]
        target: TopicArgs,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Publish as fast as possible (event times end now) instead of in real time.
        #[arg(long)]
        fast: bool,
        /// Write the injected faults here, one JSON object per line.
        #[arg(long)]
        ground_truth: Option<PathBuf>,
        /// Publish each site's readings to its own topic, `<topic>.<site>` (raw data stays
        /// at its site: each site's nodes consume only theirs).
        #[arg(long)]
        per_site_topics: bool,
    },
    /// Publish CSV files as motors (one file, one motor), labels stripped into ground truth.
    Replay {
        /// CSV files; SKAB's columns are mapped by default.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        target: TopicArgs,
        /// Map a column to a field: COLUMN=FIELD, FIELD a channel, extra.NAME or skip.
        #[arg(long = "map", value_name = "COLUMN=FIELD")]
        mappings: Vec<String>,
        /// Timestamp column (default: the first one).
        #[arg(long)]
        time_column: Option<String>,
        /// Label columns to strip into the ground truth.
        #[arg(long, value_delimiter = ',', default_value = "anomaly,changepoint")]
        labels: Vec<String>,
        #[arg(long, default_value_t = 3)]
        sites: u32,
        #[arg(long, default_value = "")]
        prefix: String,
        /// Times real time; 0 publishes as fast as possible.
        #[arg(long, default_value_t = 1.0)]
        speedup: f64,
        /// Each file ends a random time up to this long before now.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        offset_range: Duration,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = WireFormat::Protobuf)]
        format: WireFormat,
        /// Write the labelled intervals here, one JSON object per line.
        #[arg(long)]
        ground_truth: Option<PathBuf>,
    },
    /// Run a node as configured (see deploy/tessera.example.toml): ingest, continuous queries
    /// and alerts, and as its config says a Raft member, Flight SQL, /metrics and health checks,
    /// the site store. Runs until Ctrl-C or SIGTERM, then stops cleanly.
    #[command(alias = "ingest")]
    Node {
        /// TOML config; env TESSERA__SECTION__KEY overrides.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Stop after this long (default: until Ctrl-C or SIGTERM).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Alert rows to print at the end.
        #[arg(long, default_value_t = 20)]
        show: usize,
        /// A `CREATE CONTINUOUS QUERY` statement to run besides the configured ones (repeatable).
        #[arg(long = "query", value_name = "SQL")]
        queries: Vec<String>,
    },
    /// Replay the labelled data (SKAB valve1 + anomaly-free, NAB) through an embedded Kafka into
    /// the pipeline and score the alerts against the labels.
    Eval {
        /// SKAB folder (valve1/, anomaly-free/).
        #[arg(long, default_value = "../shared/data/skab")]
        skab_dir: PathBuf,
        /// NAB folder; `none` to skip NAB.
        #[arg(long, default_value = "../shared/data/nab")]
        nab_dir: String,
        /// Number of valve1 files (0: all).
        #[arg(long, default_value_t = 0)]
        skab_files: usize,
        /// Seed of the random per-motor time offsets.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Node config whose [detect] section to evaluate (default: the default rules).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    #[command(flatten)]
    Control(ControlCommand),
}

/// Where `simulate` and `replay` publish; the topic is created if missing.
#[derive(clap::Args)]
struct TopicArgs {
    #[arg(long)]
    brokers: String,
    #[arg(long, default_value = "telemetry")]
    topic: String,
    /// Partitions of the topic, if it has to be created.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
}

impl TopicArgs {
    /// Creates the topic if needed and returns a producer for it.
    fn producer(&self, format: WireFormat) -> Result<TelemetryProducer> {
        ensure_topics(&self.brokers, &[(&self.topic, self.partitions)])?;
        TelemetryProducer::new(&self.brokers, &self.topic, format, &BTreeMap::new())
    }
}

/// The simulated fleet, shared by `demo` and `simulate`.
#[derive(clap::Args)]
struct FleetArgs {
    #[arg(long, default_value_t = 1000)]
    motors: u32,
    #[arg(long, default_value_t = 3)]
    sites: u32,
    /// Readings per second per motor.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// The simulated (event-time) span; Ctrl-C stops earlier [default: 60s for simulate, 3m
    /// for the demo].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Share of motors with an injected fault.
    #[arg(long, default_value_t = 0.05)]
    fault_fraction: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = WireFormat::Protobuf)]
    format: WireFormat,
}

/// Runs the command line `args` (the program name first) to the end. Ctrl-C (SIGINT) or
/// SIGTERM asks a long-running command to stop cleanly; a second one exits at once (130).
pub fn run<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    // Logs to stderr; spans to OTLP when configured (a node's [telemetry], the demo's flag,
    // or OTEL_EXPORTER_OTLP_ENDPOINT).
    let (telemetry, node_config, log_filter) = match &cli.command {
        Command::Node { config, .. } => {
            let loaded = NodeConfig::load(config.as_deref())?;
            (loaded.telemetry.clone(), Some(loaded), "warn,tessera=info")
        }
        // The demo's own output is the story; logs only for what goes wrong.
        Command::Demo { otlp_endpoint, .. } => (TelemetryConfig { otlp_endpoint: otlp_endpoint.clone(), ..Default::default() }, None, "warn,openraft=error"),
        _ => (TelemetryConfig::default(), None, "warn,tessera=info"),
    };
    let _telemetry = crate::telemetry::init(&telemetry, log_filter)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                    eprintln!("tessera: cannot listen for signals; stop with SIGKILL");
                    return;
                };
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                eprintln!("\nstopping (Ctrl-C again to abort)...");
                stop.store(true, Ordering::SeqCst);
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                std::process::exit(130);
            })
        });
    }
    match cli.command {
        Command::Demo { fleet: f, bad_every, brokers, sql_port, http_port, otlp_endpoint: _, exit_when_done } => {
            let opts = DemoOptions {
                motors: f.motors,
                sites: f.sites,
                rate_hz: f.rate,
                duration: f.duration.unwrap_or(Duration::from_secs(180)),
                fault_fraction: f.fault_fraction,
                seed: f.seed,
                format: f.format,
                bad_every,
                brokers,
                sql_port,
                http_port,
                exit_when_done,
            };
            demo::run(&opts, &stop)?;
        }
        Command::Simulate { target, fleet, fast, ground_truth, per_site_topics } => {
            let FleetArgs { motors, sites, rate, duration, fault_fraction, seed, format } = fleet;
            let duration = duration.unwrap_or(Duration::from_secs(60));
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let steps = (duration.as_secs_f64() * rate).ceil() as u64;
            let start_ms = now_ms() - if fast { duration.as_millis() as i64 } else { 0 };
            let mut sim = Simulator::new(FleetSpec { motors, sites, rate_hz: rate, steps, start_ms, fault_fraction, seed });
            if let Some(path) = ground_truth {
                write_jsonl(&path, &sim.ground_truth())?;
            }
            let mut producers = BTreeMap::new();
            match per_site_topics {
                true => {
                    for site in (0..sites).map(crate::simulate::site_name) {
                        let topic = TopicArgs { topic: format!("{}.{site}", target.topic), brokers: target.brokers.clone(), partitions: target.partitions };
                        producers.insert(site, topic.producer(format)?);
                    }
                }
                false => {
                    producers.insert(String::new(), target.producer(format)?);
                }
            }
            let started = Instant::now();
            let mut step = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if !fast {
                    let due = Duration::from_secs_f64(step as f64 / rate);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let Some(readings) = sim.next_step() else { break };
                match per_site_topics {
                    true => {
                        for r in &readings {
                            producers[r.site_id.as_str()].send_readings(std::slice::from_ref(r))?;
                        }
                    }
                    false => producers[""].send_readings(&readings)?,
                }
                step += 1;
            }
            let mut delivered = 0;
            for producer in producers.values() {
                delivered += producer.flush(Duration::from_secs(60))?.delivered;
            }
            println!("published {delivered} messages ({} readings) in {:.1}s", step * u64::from(motors), started.elapsed().as_secs_f64());
        }
        Command::Replay {
            files, target, mappings, time_column, labels, sites, prefix, speedup, offset_range, seed, format, ground_truth,
        } => {
            let mut mapping = replay::skab_mapping();
            let mut required_columns = Vec::new();
            for m in &mappings {
                let Some((column, field)) = m.split_once('=') else { bail!("--map {m:?}: expected COLUMN=FIELD") };
                mapping.insert(column.to_string(), field.parse::<Target>().with_context(|| format!("--map {m:?}"))?);
                required_columns.push(column.to_string());
            }
            let opts = ReplayOptions {
                mapping,
                required_columns,
                time_column,
                label_columns: labels,
                sites,
                motor_prefix: prefix,
                end_ms: now_ms(),
                offset_range_ms: offset_range.as_millis() as i64,
                seed,
            };
            let motors = replay::load(&files, &opts)?;
            if let Some(path) = ground_truth {
                write_jsonl(&path, &motors.iter().flat_map(|m| m.labels.clone()).collect::<Vec<_>>())?;
            }
            let producer = target.producer(format)?;
            let sent = replay::publish(&motors, &producer, speedup, true, &stop)?;
            let report = producer.flush(Duration::from_secs(60))?;
            println!("replayed {} files as motors: {sent} readings, {} messages delivered", motors.len(), report.delivered);
        }
        Command::Node { duration, show, queries, .. } => {
            let mut config = node_config.expect("loaded above for the node command");
            config.detect.queries.extend(queries);
            let engine = build_engine(&config.detect)?;
            for q in engine.queries() {
                println!("continuous query {} on {}", q.name, tessera_stream::engine::describe(&q.window));
            }
            let brokers = config.ingest.brokers.clone();
            ensure_topics(
                &brokers,
                &[(&config.ingest.dead_letter_topic, 3), (&config.detect.alerts_topic, 3), (&config.detect.late_topic, 3), (&config.detect.dead_letter_topic, 1)],
            )?;
            drop(engine);
            let node = Node::start(&config)?;
            let mut adopted_printed = 0;
            let started = Instant::now();
            let mut last_print = Instant::now();
            while !stop.load(Ordering::Relaxed) && duration.is_none_or(|d| started.elapsed() < d) && !node.failed() {
                std::thread::sleep(Duration::from_millis(100));
                if last_print.elapsed() >= Duration::from_secs(5) {
                    last_print = Instant::now();
                    let s = node.ingest_stats();
                    let d = node.detect_stats();
                    for a in &d.adopted[adopted_printed..] {
                        println!(
                            "partition {}/{}: restored checkpoint {} ({} motors, {} open windows; fresh: {:?}), resuming at its offset",
                            a.partition.0, a.partition.1, a.id, a.motors, a.open_windows, a.fresh
                        );
                    }
                    adopted_printed = d.adopted.len();
                    println!(
                        "consumed {} messages, {} readings, {} dead letters | {} late | {} alert events, {} open | {} checkpoints",
                        s.messages, s.readings_accepted, s.dead_letters_sent, d.late_sent, d.alerts_sent, d.engine.alerts_open, d.checkpoints
                    );
                    std::io::stdout().flush()?;
                }
            }
            let (final_stats, engine) = node.stop()?;
            let rt = tokio::runtime::Builder::new_current_thread().build()?;
            let sql = format!("SELECT query, motor_id, state, severity, round(score, 2) AS score, window_start FROM alerts ORDER BY emitted_at DESC LIMIT {show}");
            let alerts = rt.block_on(engine.sql(&sql))?;
            println!("{}", datafusion::arrow::util::pretty::pretty_format_batches(&alerts)?);
            println!("{final_stats:#?}\n{:#?}", engine.stats());
        }
        Command::Eval { skab_dir, nab_dir, skab_files, seed, config, json } => {
            let detect = NodeConfig::load(config.as_deref())?.detect;
            let opts = EvalOptions {
                skab_dir,
                nab_dir: (nab_dir != "none").then(|| PathBuf::from(nab_dir)),
                skab_files,
                anomaly_free: true,
                seed,
                detect,
            };
            let report = eval::run(&opts, true)?;
            println!(
                "published {} readings, ingested {}, {} late; {} alert events; {:.1} s\n\n{}",
                report.published,
                report.ingested,
                report.late,
                report.alert_events,
                report.wall_s,
                report.table()
            );
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Control(command) => control::run(command, &stop)?,
        Command::Store(command) => crate::storage::run_store_command(command)?,
        Command::Cert(command) => {
            let (cert, key) = crate::cert::run(command)?;
            println!("wrote {} and {} (keep the key private)", cert.display(), key.display());
        }
        Command::Sql(args) => println!("{}", crate::sql::query_table(&args)?),
        Command::HashSecret { kind } => {
            let mut secret = String::new();
            std::io::stdin().read_line(&mut secret).context("reading the secret from stdin")?;
            let secret = secret.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!secret.is_empty(), "no secret on stdin");
            match kind.as_str() {
                "password" => println!("{}", tessera_sql::auth::hash_password(secret)?),
                _ => println!("{}", tessera_sql::auth::hash_token(secret)),
            }
        }
    }
    Ok(())
}

fn write_jsonl<T: serde::Serialize>(path: &std::path::Path, rows: &[T]) -> Result<()> {
    let mut out = String::new();
    for row in rows {
        out.push_str(&serde_json::to_string(row)?);
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}
