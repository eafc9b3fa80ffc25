//! Memory per active motor (issue 25, point 4): the detection stage as shipped — the default
//! rules and the judges (data quality, wear, shift) — holding the state of `--motors` motors
//! after `--days` of readings every `--every-s` seconds, so that every per-motor history is at
//! its full length (the shift judge's 28 past days, the wear trend's samples). Half-hourly by
//! default: the most sparse sampling that still keeps the shift judge's daily profiles (at
//! most 30 minutes apart), so they are in the state too. The default rule's z-scores keep a
//! history (50 window means per channel) only for motors whose 10 s windows hold at least 5
//! readings: `--days 0.01 --every-s 1` (864 readings, every ring full) measures those.
//!
//! Each size runs in a child process of its own, so that one size's freed memory does not
//! hide the next one's. A child builds the engine, reads its resident memory, pushes the
//! readings (10,000 motors per batch, so that what is in flight does not grow with the fleet)
//! and reads it again. Per motor: the growth divided by the motors, and the slope between the
//! smallest and the largest size (the growth's part that scales with motors; the intercept is
//! fixed buffers). Beside it, each checkpoint section's bytes per motor.
//!
//! `--config rules` runs the default rules with the judges off, and `quality`, `wear` or
//! `shift` the rules with that one judge, for the split; `default-hot` is the default with
//! every motor's judge state kept in memory (`detect.cold_after = "0s"`): the side-by-side
//! figure for the spill of silent motors ([`tessera_stream::cold`]). `CONFIG@SECONDS` sets
//! `detect.cold_after` (e.g. `default@120`).
//!
//! Motors report at their own phase within the interval (`--phases spread`, the default): 60
//! groups, one every sixtieth of the interval, as sensors that were not started together do.
//! Then the judges' silent motors are in the spill file, as on a site. `--phases together`
//! sends every motor's reading at the same instant (batches of 10,000): the last step's
//! motors have all just reported, so none is silent when memory is read.
//!
//! `cargo bench --bench motor_memory -- [--motors 1000,10000,100000] [--days 30] [--every-s 1800] [--config default,rules] [--phases spread|together]`

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use tessera_node::detect::{DetectConfig, build_engine};
use tessera_suite::bench_history::{Better, record};

const BENCH: &str = "motor_memory";
/// Motors per pushed batch.
const BATCH_MOTORS: usize = 10_000;
const START_MS: i64 = 1_700_000_000_000;

struct Args {
    motors: Vec<usize>,
    /// Days of readings (a fraction for fast motors: `--days 0.01 --every-s 1` is 864 readings).
    days: f64,
    every_s: i64,
    configs: Vec<String>,
    /// Motors report at phases spread over the interval (else all at once).
    spread: bool,
    /// Set in a child: the one size and config it measures.
    child: Option<(usize, String)>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        motors: vec![1_000, 10_000, 100_000],
        days: 30.0,
        every_s: 1_800,
        configs: vec!["default".into()],
        spread: true,
        child: None,
    };
    let list = |v: Option<String>, what: &str| v.with_context(|| format!("{what} A,B,…"));
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--motors" => {
                a.motors = list(it.next(), "--motors")?.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--days" => a.days = it.next().context("--days N")?.parse()?,
            "--every-s" => a.every_s = it.next().context("--every-s N")?.parse()?,
            "--config" => a.configs = list(it.next(), "--config")?.split(',').map(String::from).collect(),
            "--child" => {
                let n = it.next().context("--child N CONFIG")?.parse()?;
                a.child = Some((n, it.next().context("--child N CONFIG")?));
            }
            "--phases" => {
                a.spread = match it.next().as_deref() {
                    Some("spread") => true,
                    Some("together") => false,
                    _ => bail!("--phases spread|together"),
                }
            }
            "--bench" => {}
            other => bail!("unknown flag {other}"),
        }
    }
    if a.every_s <= 0 || a.days <= 0.0 || a.motors.is_empty() {
        bail!("--days, --every-s and --motors must be positive");
    }
    Ok(a)
}

/// The detection config named `name`: `default` as shipped, `rules` without the judges,
/// `quality`, `wear` or `shift`: the rules and that one judge.
fn detect_config(name: &str) -> Result<DetectConfig> {
    if let Some((name, seconds)) = name.split_once('@') {
        let mut detect = detect_config(name)?;
        detect.cold_after = std::time::Duration::from_secs(seconds.parse().context("CONFIG@SECONDS")?);
        return Ok(detect);
    }
    let mut detect = DetectConfig::default();
    if name == "default" {
        return Ok(detect);
    }
    if name == "default-hot" {
        detect.cold_after = std::time::Duration::ZERO;
        return Ok(detect);
    }
    detect.data_quality.enabled = name == "quality";
    detect.wear.enabled = name == "wear";
    detect.shift.enabled = name == "shift";
    if !["rules", "quality", "wear", "shift"].contains(&name) {
        bail!("--config {name}: use default, default-hot, rules, quality, wear or shift");
    }
    Ok(detect)
}

/// What one child measured.
struct Measured {
    motors: usize,
    grown: u64,
    /// (section, bytes) of the checkpoint.
    sections: Vec<(String, usize)>,
    readings_per_s: f64,
    /// Motors the judges hold, and of those in memory (summed over the judges).
    judged: u64,
    hot: u64,
    /// How long encoding every motor's checkpoint took (cold motors read back from the spill).
    checkpoint_ms: f64,
}

impl Measured {
    fn line(&self) -> String {
        let sections: Vec<String> = self.sections.iter().map(|(n, b)| format!("{n}={b}")).collect();
        format!(
            "RESULT {} {} {:.0} {} {} {:.1} {}",
            self.motors,
            self.grown,
            self.readings_per_s,
            self.judged,
            self.hot,
            self.checkpoint_ms,
            sections.join(" ")
        )
    }

    fn parse(line: &str) -> Result<Self> {
        let mut words = line.strip_prefix("RESULT ").context("not a result line")?.split(' ');
        let mut next = || words.next().context("short result line");
        let (motors, grown, rate) = (next()?.parse()?, next()?.parse()?, next()?.parse()?);
        let (judged, hot, checkpoint_ms) = (next()?.parse()?, next()?.parse()?, next()?.parse()?);
        let sections = words
            .map(|w| {
                let (n, b) = w.split_once('=').context("section=bytes")?;
                Ok((n.to_string(), b.parse()?))
            })
            .collect::<Result<_>>()?;
        Ok(Self { motors, grown, sections, readings_per_s: rate, judged, hot, checkpoint_ms })
    }
}

/// In a child: `motors` motors' state under `config`.
fn measure(a: &Args, motors: usize, config: &str) -> Result<Measured> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut engine = build_engine(&detect_config(config)?)?;
    let before = tessera_suite::resident_bytes();
    let steps = (a.days * 86_400.0 / a.every_s as f64).round() as i64;
    let started = Instant::now();
    // Spread: 60 groups of motors, a sixtieth of the interval apart.
    let (per_batch, phase_ms) = match a.spread {
        true => (motors.div_ceil(60).min(BATCH_MOTORS), a.every_s * 1000 / 60),
        false => (BATCH_MOTORS, 0),
    };
    for r in 0..steps {
        for (group, first) in (0..motors).step_by(per_batch).enumerate() {
            let t_ms = START_MS + r * a.every_s * 1000 + group as i64 * phase_ms;
            let batch = tessera_suite::noisy_step(first..(first + per_batch).min(motors), r, t_ms)?;
            rt.block_on(engine.push(&batch, t_ms))?;
        }
    }
    let readings_per_s = (steps as f64 * motors as f64) / started.elapsed().as_secs_f64();
    let grown = tessera_suite::resident_bytes().saturating_sub(before);
    let all = |_: &str| true;
    let judges = engine.stats().judge_motors;
    let (judged, hot) = judges.values().fold((0, 0), |(j, h), (held, in_memory)| (j + held, h + in_memory));
    let checkpoint_started = Instant::now();
    let mut sections = vec![("engine".to_string(), engine.checkpoint_motors(&all)?.len())];
    sections.extend(engine.side_checkpoints(&all)?.into_iter().map(|(name, bytes)| (name.to_string(), bytes.len())));
    let checkpoint_ms = checkpoint_started.elapsed().as_secs_f64() * 1e3;
    Ok(Measured { motors, grown, sections, readings_per_s, judged, hot, checkpoint_ms })
}

fn run_child(motors: usize, config: &str, a: &Args) -> Result<Measured> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--motors", &motors.to_string(), "--days", &a.days.to_string()])
        .args(["--every-s", &a.every_s.to_string(), "--child", &motors.to_string(), config])
        .args(["--phases", if a.spread { "spread" } else { "together" }])
        .output()?;
    if !out.status.success() {
        bail!("child for {motors} motors ({config}) failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8(out.stdout)?;
    Measured::parse(stdout.lines().find(|l| l.starts_with("RESULT ")).context("the child printed no result")?)
}

fn main() -> Result<()> {
    let a = args()?;
    if let Some((motors, config)) = &a.child {
        println!("{}", measure(&a, *motors, config)?.line());
        return Ok(());
    }
    println!(
        "memory per motor: {} days of a reading every {} s per motor ({}); motors {:?}; configs {:?}",
        a.days,
        a.every_s,
        if a.spread { "phases spread over the interval" } else { "all at once" },
        a.motors,
        a.configs
    );
    for config in &a.configs {
        let mut results = Vec::new();
        for &motors in &a.motors {
            let m = run_child(motors, config, &a)?;
            let per = |bytes: usize| bytes as f64 / motors as f64;
            println!(
                "{config:>8} {motors:>7} motors: resident +{:.1} MB = {:.0} B per motor; checkpoint per motor:{}; {:.2} M readings/s; judges' motors in memory {:.0} %; checkpoint of every motor {:.0} ms",
                m.grown as f64 / 1e6,
                per(m.grown as usize),
                m.sections.iter().map(|(n, b)| format!(" {n} {:.0} B", per(*b))).collect::<String>(),
                m.readings_per_s / 1e6,
                if m.judged == 0 { 0.0 } else { 100.0 * m.hot as f64 / m.judged as f64 },
                m.checkpoint_ms,
            );
            record(
                BENCH,
                &format!("resident per motor, {config}, {motors} motors"),
                per(m.grown as usize),
                "B",
                Better::Lower,
            );
            results.push(m);
        }
        if let [first, .., last] = results.as_slice() {
            let slope = (last.grown as f64 - first.grown as f64) / (last.motors - first.motors) as f64;
            let fixed = first.grown as f64 - slope * first.motors as f64;
            println!(
                "{config:>8} fitted from {} to {} motors: {slope:.0} B per motor + {:.1} MB fixed",
                first.motors,
                last.motors,
                fixed / 1e6
            );
            record(BENCH, &format!("resident per motor, {config}, fitted"), slope, "B", Better::Lower);
        }
    }
    Ok(())
}
