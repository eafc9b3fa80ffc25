//! `tessera node --config FILE` (alias `ingest`): runs a node as configured until Ctrl-C or
//! SIGTERM (or `--duration`), printing its progress every 5 s, then stops it cleanly and
//! prints the newest alerts.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tessera_node::config::NodeConfig;
use tessera_node::detect::build_engine;
use tessera_node::node::Node;
use tessera_node::topics::create_output_topics;

/// The flags of `tessera node`.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// TOML config; env TESSERA__SECTION__KEY overrides.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stop after this long (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Alert rows to print at the end.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// A `CREATE CONTINUOUS QUERY` statement to run besides the configured ones (repeatable).
    #[arg(long = "query", value_name = "SQL")]
    pub queries: Vec<String>,
    /// Only load and check the config (file, variables, secrets it points at, the queries),
    /// print what the node would run, and exit: 0 if it would start.
    #[arg(long)]
    pub check: bool,
    /// The config once read (see [`NodeArgs::load`]).
    #[arg(skip)]
    loaded: Option<Box<NodeConfig>>,
}

impl NodeArgs {
    /// Reads the node's config: defaults ← `--config` ← environment, validated.
    pub fn load(&mut self) -> Result<()> {
        self.loaded = Some(Box::new(NodeConfig::load(self.config.as_deref())?));
        Ok(())
    }

    /// The config, if [`NodeArgs::load`] has read it.
    pub fn loaded(&self) -> Option<&NodeConfig> {
        self.loaded.as_deref()
    }
}

/// Runs the node until `stop`, `--duration` or a failure of one of its parts.
pub fn run(args: NodeArgs, stop: &AtomicBool) -> Result<()> {
    let mut config = match args.loaded {
        Some(config) => *config,
        None => NodeConfig::load(args.config.as_deref())?,
    };
    config.detect.queries.extend(args.queries);
    let engine = build_engine(&config.detect)?;
    for q in engine.queries() {
        println!("continuous query {} on {}", q.name, tessera_stream::engine::describe(&q.window));
    }
    if args.check {
        let topics: Vec<&str> = config.ingest.topics.iter().map(|t| t.name.as_str()).collect();
        println!(
            "config ok: site {}, topics {} on {}, {} SQL users, raft {}",
            config.site_id,
            topics.join(", "),
            config.ingest.brokers,
            config.sql.users.len(),
            if config.raft.is_some() { "member" } else { "none" }
        );
        return Ok(());
    }
    // A broker that cannot create topics (no admin rights, or librdkafka's mock cluster) may
    // still have them: the node goes on, and stops if a write to a missing one fails.
    if let Err(e) = create_output_topics(&config) {
        tracing::warn!(
            error = %tessera_core::error_chain(&e),
            "could not create the output topics; they must exist (ingest.dead_letter_topic, detect.alerts_topic, late_topic, dead_letter_topic)"
        );
    }
    drop(engine);
    let node = Node::start(&config)?;
    let mut adopted_printed = 0;
    let started = Instant::now();
    let mut last_print = Instant::now();
    while !stop.load(Ordering::Relaxed) && args.duration.is_none_or(|d| started.elapsed() < d) && !node.failed() {
        std::thread::sleep(Duration::from_millis(100));
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            adopted_printed = print_progress(&node, adopted_printed)?;
        }
    }
    let (final_stats, engine) = node.stop()?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let sql = format!(
        "SELECT query, motor_id, state, severity, round(score, 2) AS score, window_start FROM alerts ORDER BY emitted_at DESC LIMIT {}",
        args.show
    );
    let alerts = rt.block_on(engine.sql(&sql))?;
    println!("{}", datafusion::arrow::util::pretty::pretty_format_batches(&alerts)?);
    print_final_counters(&final_stats, &engine.stats())?;
    Ok(())
}

/// The node's counters when it stopped, one per row.
fn print_final_counters(
    ingest: &tessera_ingest::IngestStats,
    engine: &tessera_stream::engine::EngineStats,
) -> Result<()> {
    use crate::output::{OutputFormat, Rows};
    let mut rows = Rows::new(&["stage", "counter", "value"]);
    let mut add =
        |stage: &str, counter: String, value: u64| rows.push(vec![stage.into(), counter.into(), value.into()]);
    for (name, value) in [
        ("messages", ingest.messages),
        ("bytes", ingest.bytes),
        ("readings accepted", ingest.readings_accepted),
        ("readings rejected", ingest.readings_rejected),
        ("dead letters", ingest.dead_letters_sent),
        ("commits", ingest.commits),
        ("commit errors", ingest.commit_errors),
        ("rebalances", ingest.rebalances),
        ("offsets skipped", ingest.offsets_skipped),
    ] {
        add("ingest", name.into(), value);
    }
    for (reason, n) in &ingest.rejected_by_reason {
        add("ingest", format!("rejected: {reason}"), *n);
    }
    for (window, w) in &engine.windows {
        let window = tessera_stream::engine::describe(window);
        add("windows", format!("{window}: rows"), w.rows_in);
        add("windows", format!("{window}: late rows"), w.rows_late);
        add("windows", format!("{window}: closed"), w.windows_closed);
    }
    for (name, value) in [
        ("query rows", engine.query_rows),
        ("query errors", engine.query_errors),
        ("alert events", engine.alert_events),
        ("alerts open", engine.alerts_open),
    ] {
        add("detect", name.into(), value);
    }
    rows.print(OutputFormat::Table)
}

/// Prints the checkpoints adopted since the first `adopted_printed` and the node's counters;
/// returns how many adoptions have been printed now.
fn print_progress(node: &Node, adopted_printed: usize) -> Result<usize> {
    let s = node.ingest_stats();
    let d = node.detect_stats();
    for a in &d.adopted[adopted_printed..] {
        println!(
            "partition {}/{}: restored checkpoint {} ({} motors, {} open windows; fresh: {:?}), resuming at its offset",
            a.partition.0, a.partition.1, a.id, a.motors, a.open_windows, a.fresh
        );
    }
    println!(
        "consumed {} messages, {} readings, {} dead letters | {} late | {} alert events, {} open | {} checkpoints",
        s.messages,
        s.readings_accepted,
        s.dead_letters_sent,
        d.late_sent,
        d.alerts_sent,
        d.engine.alerts_open,
        d.checkpoints
    );
    std::io::stdout().flush()?;
    Ok(d.adopted.len())
}
