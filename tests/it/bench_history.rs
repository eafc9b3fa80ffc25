//! The bench history (issue 25): results appended by `src/bench_history.rs` are compared by
//! `benches/history.py`, which must report a drop against earlier results of the same bench,
//! arguments and CPU, and only then.

use std::path::Path;
use std::process::Command;

use tessera_suite::bench_history::{Better, append};

/// Runs history.py over `file`: exit code and what it printed.
fn compare(file: &Path) -> (i32, String) {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/history.py"))
        .args(["--file", &file.to_string_lossy(), "--tolerance", "0.2"])
        .output()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_drop_against_the_same_bench_and_cpu_is_reported_and_noise_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.jsonl");
    let rate =
        |v: f64| append(&file, "ingest_e2e", "--broker mock", "readings/s", v, "readings/s", Better::Higher).unwrap();
    let time = |v: f64| append(&file, "stream_zscore", "--mode stage", "stage time", v, "s", Better::Lower).unwrap();
    for v in [1000.0, 1040.0, 980.0] {
        rate(v);
    }
    for v in [0.50, 0.52] {
        time(v);
    }
    rate(950.0); // 5 % below the median: noise
    time(0.55); // 8 % slower: noise
    let (code, text) = compare(&file);
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.matches("ok ").count(), 2, "{text}");

    time(0.70); // 35 % slower than the median of the earlier five
    let (code, text) = compare(&file);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("DROP  stream_zscore [--mode stage] stage time"), "{text}");
    assert!(!text.contains("DROP  ingest_e2e"), "{text}");

    rate(500.0); // halved
    let (code, text) = compare(&file);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("DROP  ingest_e2e [--broker mock] readings/s"), "{text}");
    assert!(text.contains("2 figure(s) dropped"), "{text}");
}

#[test]
fn results_are_compared_only_with_the_same_cpu_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.jsonl");
    append(&file, "stream_zscore", "--rounds 3", "stage time", 0.5, "s", Better::Lower).unwrap();
    // Another CPU's line, written as the file would hold it: 3× faster there, so this CPU's
    // next result must not be set against it.
    let mut line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&file).unwrap().lines().next().unwrap()).unwrap();
    line["cpu"] = "Another CPU @ 9 GHz".into();
    line["value"] = 0.17.into();
    line["at"] = "2020-01-01T00:00:00.000Z".into();
    std::fs::write(&file, format!("{}{line}\n", std::fs::read_to_string(&file).unwrap())).unwrap();
    append(&file, "stream_zscore", "--rounds 1", "stage time", 0.9, "s", Better::Lower).unwrap();
    append(&file, "stream_zscore", "--rounds 3", "stage time", 0.52, "s", Better::Lower).unwrap();
    let (code, text) = compare(&file);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("0.52 s at ") && text.contains("vs median 0.5 of 1 earlier"), "{text}");
    // A line that is not a result is an error, not skipped.
    std::fs::write(&file, format!("{}{{\"bench\": 1}}\n", std::fs::read_to_string(&file).unwrap())).unwrap();
    let (code, text) = compare(&file);
    assert_eq!(code, 2, "{text}");
}

/// A result carries the commit its binary was built from (stamped at build time), whatever the
/// directory the bench runs in: here, a temporary one outside the checkout.
#[test]
fn a_result_names_the_commit_the_binary_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.jsonl");
    append(&file, "ingest_e2e", "", "readings/s", 1.0, "readings/s", Better::Higher).unwrap();
    let line: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let commit = line["commit"].as_str().expect("a commit field").to_string();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        // Built from this checkout: its commit (the suite is built from what is checked out).
        Some(head) => assert!(commit == head || commit == format!("{head}+dirty"), "{commit} is not {head}"),
        None => assert_eq!(commit, "unknown"),
    }
}
