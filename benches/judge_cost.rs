//! What the judges beside the rules (data quality, wear, shift; issue 23) cost: the default rule set
//! on `--motors` motors, each reporting every 10 s for `--readings` readings, pushed in
//! batches of all motors, once with the judges off and once on, side by side in one run.
//! Prints the push time of each and their ratio, the process's resident memory after each run,
//! and the checkpointed state per motor (engine, `quality`, `wear`, `shift` sections).
//!
//! `cargo bench --bench judge_cost -- --motors 100000 --readings 30`

use std::time::Instant;

use anyhow::{Context as _, Result};
use datafusion::arrow::array::RecordBatch;
use tessera_node::detect::{DetectConfig, build_engine};

struct Args {
    motors: usize,
    readings: i64,
}

fn args() -> Result<Args> {
    let mut a = Args { motors: 100_000, readings: 30 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--motors" => a.motors = it.next().context("--motors N")?.parse()?,
            "--readings" => a.readings = it.next().context("--readings N")?.parse()?,
            "--bench" => {}
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let batches: Vec<RecordBatch> = (0..a.readings)
        .map(|r| tessera_suite::noisy_step(0..a.motors, r, 1_700_000_000_000 + r * 10_000))
        .collect::<Result<_>>()?;
    println!("{} motors × {} readings (every 10 s), the default rules; judges off, then on", a.motors, a.readings);
    let mut times = Vec::new();
    for judges in [false, true] {
        let mut detect = DetectConfig::default();
        detect.data_quality.enabled = judges;
        detect.wear.enabled = judges;
        detect.shift.enabled = judges;
        let before = tessera_suite::resident_bytes();
        let mut engine = build_engine(&detect)?;
        let started = Instant::now();
        for (r, b) in batches.iter().enumerate() {
            rt.block_on(engine.push(b, 1_700_000_000_000 + r as i64 * 10_000))?;
        }
        let took = started.elapsed();
        let grown = tessera_suite::resident_bytes().saturating_sub(before);
        let all = |_: &str| true;
        let state = engine.checkpoint_motors(&all)?.len();
        let sides = engine.side_checkpoints(&all)?;
        let per = |bytes: usize| bytes as f64 / a.motors as f64;
        println!(
            "judges {}: push {:.2} s ({:.2} M readings/s); resident memory grew {:.0} MB ({:.0} B per motor); \
             checkpoint per motor: engine {:.0} B{}",
            if judges { "on " } else { "off" },
            took.as_secs_f64(),
            (a.motors as f64 * a.readings as f64) / took.as_secs_f64() / 1e6,
            grown as f64 / 1e6,
            per(grown as usize),
            per(state),
            sides.iter().map(|(name, b)| format!(", {name} {:.0} B", per(b.len()))).collect::<String>()
        );
        times.push(took.as_secs_f64());
        drop(engine);
    }
    println!("judges on / off: {:.2}× the push time", times[1] / times[0]);
    Ok(())
}
