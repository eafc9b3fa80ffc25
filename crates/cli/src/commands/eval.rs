//! `tessera eval`: replays the labelled data through an embedded Kafka into the pipeline and
//! scores the alerts against the labels (see [`tessera_workload::eval`]).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tessera_node::config::NodeConfig;
use tessera_workload::eval::{self, EvalOptions};

/// The flags of `tessera eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// SKAB folder (valve1/, anomaly-free/).
    #[arg(long, default_value = "../shared/data/skab")]
    pub skab_dir: PathBuf,
    /// NAB folder; `none` to skip NAB.
    #[arg(long, default_value = "../shared/data/nab")]
    pub nab_dir: String,
    /// Number of valve1 files (0: all).
    #[arg(long, default_value_t = 0)]
    pub skab_files: usize,
    /// Seed of the random per-motor time offsets.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Node config whose [detect] section to evaluate (default: the default rules).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the evaluation and prints its report.
pub fn run(args: EvalArgs) -> Result<()> {
    let detect = NodeConfig::load(args.config.as_deref())?.detect;
    let opts = EvalOptions {
        skab_dir: args.skab_dir,
        nab_dir: (args.nab_dir != "none").then(|| PathBuf::from(args.nab_dir)),
        skab_files: args.skab_files,
        anomaly_free: true,
        seed: args.seed,
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
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
