//! `deploy/local-cluster.sh` as an operator runs it: a real Kafka broker process (Tansu), three
//! `tessera node` processes on loopback (deploy/cluster/site-*.toml: one Raft group, federated
//! SQL), replayed data, a Flight SQL query that must count every site's motors, and a clean
//! stop of everything. `tessera` is this test binary behind a wrapper script
//! ([`crate::cli_process::wrapper`]), so no second build is needed.

use std::process::Command;

#[test]
fn the_local_cluster_script_runs_three_sites_answers_sql_and_stops_cleanly() {
    let bin = tempfile::tempdir().expect("tempdir");
    let tessera = crate::cli_process::wrapper(bin.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh");
    let out = Command::new("bash").arg(script).env("TESSERA_BIN", &tessera).output().expect("bash runs the script");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the script failed ({}):\n{stdout}\n{stderr}", out.status);
    let fleet = stdout.lines().find(|l| l.starts_with("| fleet")).unwrap_or_else(|| panic!("no fleet row:\n{stdout}"));
    let cells: Vec<&str> = fleet.split('|').map(str::trim).collect();
    assert_eq!(cells[2], "150", "every site's motors: {fleet}");
    for site in ["site-a", "site-b", "site-c"] {
        assert!(stdout.contains(&format!("local-cluster: {site} stopped cleanly")), "{stdout}\n{stderr}");
    }
    assert!(stdout.contains("local-cluster: done"), "{stdout}");
    let left = Command::new("pgrep")
        .args(["-f", "tansu broker --listener-url tcp://127.0.0.1:19092"])
        .output()
        .expect("pgrep");
    assert!(!left.status.success(), "the broker is still running");
}
