//! What operators get around the binary: shell completions that a real bash loads, man pages
//! that a real `man` renders, and JSON log lines a log pipeline can parse (a node process
//! with `[log] format = "json"`).

use std::process::Command;

use clap_complete::Shell;

#[test]
fn bash_loads_the_completions_and_man_renders_every_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("tessera.bash");
    std::fs::write(&script, tessera_cli::commands::completions::script(Shell::Bash)).expect("write");
    let bash = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && complete -p tessera", script.display()))
        .output()
        .expect("bash");
    let registered = String::from_utf8_lossy(&bash.stdout);
    assert!(
        bash.status.success() && registered.contains("tessera"),
        "{registered}{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    let text = std::fs::read_to_string(&script).expect("read");
    for word in ["control-node", "completions", "--output", "--log-format"] {
        assert!(text.contains(word), "the completions know {word}");
    }

    let pages = dir.path().join("man1");
    tessera_cli::run_in_process(
        ["tessera", "man", "--out", pages.to_str().expect("utf-8")],
        &std::sync::atomic::AtomicBool::new(false),
    )
    .expect("tessera man");
    for page in ["tessera.1", "tessera-sql.1", "tessera-cluster-status.1", "tessera-control-node.1"] {
        let path = pages.join(page);
        let out = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(&path)
            .env("MANWIDTH", "100")
            .output()
            .unwrap_or_else(|e| panic!("man {page}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("NAME"),
            "{page}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if page == "tessera-sql.1" {
            assert!(text.contains("--output") && text.contains("TESSERA__CLIENT__SQL"), "{text}");
        }
    }
    let count = std::fs::read_dir(&pages).expect("pages").count();
    assert!(count > 30, "a page per subcommand: {count}");
}

#[test]
fn a_node_with_json_logs_writes_one_json_object_per_line() {
    let (_kafka, brokers) = crate::embedded_kafka(1, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    // A deprecated key makes the node warn at start: a line with fields to look for.
    std::fs::write(
        &config,
        format!(
            "site_id = \"site-a\"\n[log]\nformat = \"json\"\n[ingest]\nbrokers = \"{brokers}\"\ndead_letter_topic = \"dead-letters\"\n[ingest.validation]\nmax_past_ms = 3600000\n"
        ),
    )
    .expect("write");
    let out = crate::cli_process::command(&["node", "--config", config.to_str().expect("utf-8"), "--duration", "3s"])
        .env("RUST_LOG", "info")
        .output()
        .expect("tessera node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 2, "{stderr}");
    assert!(
        lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["target"].is_string()),
        "{stderr}"
    );
    let warning = lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains("max_past_ms is deprecated")))
        .unwrap_or_else(|| panic!("the deprecation warning: {stderr}"));
    assert_eq!(warning["level"], "WARN");
    // Nothing else on stderr but JSON lines (and libtest's own, which the process prints on stdout).
    let other: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('{')).collect();
    assert!(other.is_empty(), "lines that are no JSON: {other:?}");
}
