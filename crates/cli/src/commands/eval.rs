//! `tessera eval`: replays labelled data through an embedded Kafka into the pipeline and scores
//! the alerts against the labels (see [`tessera_workload::eval`]): SKAB's and NAB's layouts, or
//! any folder of CSV files with a labels file; one run per `--rules` set (ablation).

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use tessera_node::config::NodeConfig;
use tessera_workload::eval::{self, DataSet, EvalOptions, Rules};

/// The flags of `tessera eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// A folder of CSV files to evaluate (one motor per file); repeat for several. Without it,
    /// SKAB and NAB from `$TESSERA_DATA_DIR` (default ../shared/data).
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// The labels file of each `--data` folder, in the same order (default: its labels.json);
    /// see `tessera_workload::eval::FolderLabels` for the format.
    #[arg(long)]
    pub labels: Vec<PathBuf>,
    /// Write the simulator's labelled scenarios (run-to-failure wear at 10-minute sampling,
    /// daily cycles, several sampling rates; `tessera_workload::scenarios`, seeded by --seed)
    /// into DIR, unless it has a labels.json already, and evaluate them like a `--data` folder.
    #[arg(long, value_name = "DIR")]
    pub scenarios: Option<PathBuf>,
    /// Write the demo's simulated fleet (`tessera demo`'s defaults: 1,000 motors on 3 sites at
    /// 1 Hz for 3 minutes, 5 % with a fault; the simulator seeded by --seed) into DIR, unless
    /// it has a labels.json already, and evaluate it like a `--data` folder with the demo's
    /// rules and judges (unless --config): the demo's detection, scored offline (data quality
    /// by processing time, clock skew and silence, needs the live demo).
    #[arg(long, value_name = "DIR")]
    pub fleet: Option<PathBuf>,
    /// SKAB folder (valve1/, anomaly-free/); evaluated beside `--data` when given.
    #[arg(long)]
    pub skab_dir: Option<PathBuf>,
    /// NAB folder (ambient_temperature_system_failure.csv, labels.json); evaluated beside
    /// `--data` when given.
    #[arg(long)]
    pub nab_dir: Option<PathBuf>,
    /// Number of SKAB valve1 files (0: all).
    #[arg(long, default_value_t = 0)]
    pub skab_files: usize,
    /// Seed of the random per-motor time offsets.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Node config whose [detect] section to evaluate (default: the default rules).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The rules to run: `all`, or a comma-separated list of `queries`, `shift`, `wear`,
    /// `quality` (data quality on event time); repeat for one run per set (ablation).
    #[arg(long, default_value = "all")]
    pub rules: Vec<String>,
    /// Also print each motor's outcome (events found, false alarms, alerts by kind).
    #[arg(long)]
    pub per_motor: bool,
    /// Also write the reports as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The folder of the labelled data sets: `$TESSERA_DATA_DIR`, or the earlier `$TESSERA_DATA`
/// (with a deprecation warning), else `../shared/data`.
fn shared_data_dir() -> String {
    if let Ok(dir) = std::env::var("TESSERA_DATA_DIR") {
        return dir;
    }
    if let Ok(dir) = std::env::var("TESSERA_DATA") {
        tracing::warn!("TESSERA_DATA is deprecated: set TESSERA_DATA_DIR");
        return dir;
    }
    "../shared/data".into()
}

/// Runs the evaluations and prints their reports.
pub fn run(args: EvalArgs) -> Result<()> {
    let detect = if args.fleet.is_some() && args.config.is_none() {
        // The demo's fleet, judged as the demo judges it.
        tessera_node::detect::DetectConfig::demo()
    } else {
        NodeConfig::load(args.config.as_deref())?.detect
    };
    if args.labels.len() > args.data.len() {
        bail!("--labels given {} times for {} --data folders", args.labels.len(), args.data.len());
    }
    let shared = PathBuf::from(shared_data_dir());
    let mut sets = Vec::new();
    let defaults = args.data.is_empty()
        && args.skab_dir.is_none()
        && args.nab_dir.is_none()
        && args.scenarios.is_none()
        && args.fleet.is_none();
    if let Some(dir) = args.skab_dir.clone().or_else(|| defaults.then(|| shared.join("skab"))) {
        sets.push(DataSet::Skab { dir, files: args.skab_files, anomaly_free: true });
    }
    if let Some(dir) = args.nab_dir.clone().or_else(|| defaults.then(|| shared.join("nab"))) {
        sets.push(DataSet::Nab { dir });
    }
    for (i, dir) in args.data.iter().enumerate() {
        let labels = args.labels.get(i).cloned().unwrap_or_else(|| dir.join("labels.json"));
        sets.push(DataSet::Folder { dir: dir.clone(), labels });
    }
    if let Some(dir) = &args.scenarios {
        if !dir.join("labels.json").exists() {
            let files = tessera_workload::scenarios::write(dir, args.seed, 4)?;
            println!("wrote {} labelled scenario files to {}", files.len(), dir.display());
        }
        sets.push(DataSet::Folder { dir: dir.clone(), labels: dir.join("labels.json") });
    }
    if let Some(dir) = &args.fleet {
        if !dir.join("labels.json").exists() {
            let spec = tessera_workload::simulate::FleetSpec::demo(args.seed);
            let files = tessera_workload::scenarios::write_fleet(dir, spec)?;
            println!("wrote the demo's fleet, {} labelled files, to {}", files.len(), dir.display());
        }
        sets.push(DataSet::Folder { dir: dir.clone(), labels: dir.join("labels.json") });
    }
    let mut reports = Vec::new();
    for rules in &args.rules {
        let rules: Rules = rules.parse().context("--rules")?;
        let opts = EvalOptions { sets: sets.clone(), seed: args.seed, detect: detect.clone(), rules };
        let report = eval::run(&opts, true)?;
        println!(
            "rules {rules}: published {} readings, ingested {}, {} late; {} alert events; {:.1} s\n\n{}",
            report.published,
            report.ingested,
            report.late,
            report.alert_events,
            report.wall_s,
            report.table()
        );
        if args.per_motor {
            println!("{}", report.motors_table());
        }
        reports.push(report);
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
