//! `tessera replay`: publishes CSV files as motors, one file one motor, with their labels
//! stripped into ground truth (see [`tessera_workload::csv_replay`]).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tessera_core::now_ms;
use tessera_workload::csv_replay::{self, ReplayOptions, Target};
use tessera_workload::producer::WireFormat;

use crate::args::TopicArgs;

/// The flags of `tessera replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// CSV files; SKAB's columns are mapped by default.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where to publish.
    #[command(flatten)]
    pub target: TopicArgs,
    /// Map a column to a field: COLUMN=FIELD, FIELD a channel, extra.NAME or skip.
    #[arg(long = "map", value_name = "COLUMN=FIELD")]
    pub mappings: Vec<String>,
    /// Timestamp column (default: the first one).
    #[arg(long)]
    pub time_column: Option<String>,
    /// Label columns to strip into the ground truth.
    #[arg(long, value_delimiter = ',', default_value = "anomaly,changepoint")]
    pub labels: Vec<String>,
    /// Sites the motors are spread over.
    #[arg(long, default_value_t = 3)]
    pub sites: u32,
    /// Prefix of the motor ids.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Times real time; 0 publishes as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Each file ends a random time up to this long before now.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub offset_range: Duration,
    /// Seed of the random offsets.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Message encoding.
    #[arg(long, value_enum, default_value_t = WireFormat::Protobuf)]
    pub format: WireFormat,
    /// Write the labelled intervals here, one JSON object per line.
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
}

/// Publishes the files' readings (until `stop`).
pub fn run(args: ReplayArgs, stop: &AtomicBool) -> Result<()> {
    let mut mapping = csv_replay::skab_mapping();
    let mut required_columns = Vec::new();
    for m in &args.mappings {
        let Some((column, field)) = m.split_once('=') else { bail!("--map {m:?}: expected COLUMN=FIELD") };
        mapping.insert(column.to_string(), field.parse::<Target>().with_context(|| format!("--map {m:?}"))?);
        required_columns.push(column.to_string());
    }
    let opts = ReplayOptions {
        mapping,
        required_columns,
        time_column: args.time_column,
        label_columns: args.labels,
        sites: args.sites,
        motor_prefix: args.prefix,
        end_ms: now_ms(),
        offset_range_ms: args.offset_range.as_millis() as i64,
        seed: args.seed,
    };
    let motors = csv_replay::load(&args.files, &opts)?;
    if let Some(path) = args.ground_truth {
        crate::files::write_jsonl(&path, &motors.iter().flat_map(|m| m.labels.clone()).collect::<Vec<_>>())?;
    }
    let producer = args.target.producer(args.format)?;
    let sent = csv_replay::publish(&motors, &producer, args.speedup, true, stop)?;
    let report = producer.flush(Duration::from_secs(60))?;
    println!("replayed {} files as motors: {sent} readings, {} messages delivered", motors.len(), report.delivered);
    Ok(())
}
