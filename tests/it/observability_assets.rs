//! The Prometheus alert rules (deploy/prometheus/) and the Grafana dashboard (deploy/grafana/)
//! are checked as far as possible offline: every expression parses as PromQL, Prometheus' own
//! `promtool` (Debian's `prometheus`, installed by `scripts/setup.sh --with-broker`) checks the
//! rules and runs their unit tests (`tessera-rules.test.yaml`), and [`referenced_metrics`]
//! lists the series they use, which the demo test then finds in a real node's /metrics.

use std::collections::BTreeSet;
use std::path::Path;

fn deploy(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the rules and the dashboard, with where it comes from.
fn expressions() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let rules = deploy("prometheus/tessera-rules.yaml");
    let mut alert = String::new();
    for line in rules.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = name.to_string();
        }
        if let Some(expr) = line.strip_prefix("expr: ") {
            exprs.push((format!("rule {alert}"), expr.to_string()));
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana/tessera-dashboard.json")).expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push((format!("panel {}", panel["title"]), target["expr"].as_str().expect("expr").to_string()));
        }
    }
    exprs
}

/// The `tessera_*` metric families the rules and the dashboard use (histograms by their name).
pub(crate) fn referenced_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, expr) in expressions() {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("tessera_") {
            let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
                .unwrap_or(&name);
            names.insert(family.to_string());
        }
    }
    names
}

#[test]
fn every_rule_and_panel_expression_parses_as_promql() {
    let exprs = expressions();
    assert!(exprs.len() >= 25, "{} expressions", exprs.len());
    for (what, expr) in &exprs {
        if let Err(e) = promql_parser::parser::parse(expr) {
            panic!("{what}: {e}\n{expr}");
        }
    }
    let rules = deploy("prometheus/tessera-rules.yaml");
    assert_eq!(rules.matches("- alert: ").count(), rules.matches("expr: ").count(), "one expr per alert");
    assert_eq!(
        rules.matches("- alert: ").count(),
        rules.matches("summary: ").count(),
        "every alert says what happened"
    );
    let names = referenced_metrics();
    for needed in [
        "tessera_ingest_consumer_lag",
        "tessera_raft_term",
        "tessera_alert_latency_seconds",
        "tessera_sql_query_duration_seconds",
        "tessera_ingest_dead_letters_total",
    ] {
        assert!(names.contains(needed), "{needed} is used nowhere: {names:?}");
    }
}

/// `promtool check rules` and `promtool test rules`: the rules load in Prometheus, and the
/// ones with unit tests fire (and stay quiet) as their tests say.
#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    for args in [["check", "rules", "tessera-rules.yaml"], ["test", "rules", "tessera-rules.test.yaml"]] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs (scripts/setup.sh --with-broker installs Debian's prometheus)");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
