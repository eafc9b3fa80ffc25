//! Bench results kept with the commit and the CPU they were measured on, so that a drop shows
//! when it happens rather than a month later on another machine (issue 25).
//!
//! A bench calls [`record`] for each headline figure. With `TESSERA_BENCH_HISTORY` set to a
//! file (`benches/history.jsonl` is the repository's), each figure is appended to it as one
//! JSON line: bench, figure, value, unit, whether higher is better, the bench's arguments, the
//! commit the binary was built from (with `+dirty` for uncommitted changes), the CPU model, the core count and the time.
//! `benches/history.py` compares the newest figure of each kind with the earlier ones measured
//! on the same CPU model and with the same arguments, and fails when it dropped.

use std::io::Write as _;

/// Which way a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Rates, ratios to a peer.
    Higher,
    /// Times, CPU per reading.
    Lower,
}

/// Appends `bench`'s `figure` (`value` in `unit`) to the history file named by
/// `TESSERA_BENCH_HISTORY`, if set; prints where it went. The bench's own arguments are kept
/// with it (figures are only compared with the same arguments).
pub fn record(bench: &str, figure: &str, value: f64, unit: &str, better: Better) {
    let Some(path) = std::env::var_os("TESSERA_BENCH_HISTORY") else { return };
    let path = std::path::PathBuf::from(path);
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match append(&path, bench, &args.join(" "), figure, value, unit, better) {
        Ok(()) => eprintln!("history: {bench} / {figure} = {value} {unit} -> {}", path.display()),
        Err(e) => eprintln!("history: could not append to {}: {e}", path.display()),
    }
}

/// Appends one result line to `path`: [`record`]'s, with the bench's arguments given.
pub fn append(
    path: &std::path::Path,
    bench: &str,
    args: &str,
    figure: &str,
    value: f64,
    unit: &str,
    better: Better,
) -> std::io::Result<()> {
    let line = serde_json::json!({
        "bench": bench,
        "figure": figure,
        "value": value,
        "unit": unit,
        "better": match better { Better::Higher => "higher", Better::Lower => "lower" },
        "args": args,
        "commit": commit(),
        "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{line}")
}

/// The commit this binary was built from (stamped by `build.rs`): short, with `+dirty` when
/// tracked files had uncommitted changes; `unknown` outside a git checkout.
fn commit() -> &'static str {
    env!("TESSERA_BUILD_COMMIT")
}

/// The CPU's model name from `/proc/cpuinfo`, or `unknown`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
