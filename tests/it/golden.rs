//! Golden SQL tests: each `tests/golden/*.sql` script runs against a fresh stream engine and
//! its transcript must equal `<name>.expected`. Run with `TESSERA_BLESS=1` to rewrite the
//! expected files after a deliberate change (then read the diff).
//!
//! Script statements end with `;` at the end of a line:
//! - `SET allowed_lateness = <ms>;`, `SET idle_timeout = <ms>;` (before the first query)
//! - `CREATE CONTINUOUS QUERY ...;` registers a query (an error is recorded, not fatal)
//! - `PUSH AT <now ms> (<columns>) VALUES (...), ...;` feeds readings that arrive at `now`
//!   (columns by telemetry name; `ts` in epoch ms)
//! - `TICK AT <now ms>;` advances processing time (idle timeouts)
//! - anything else is SQL over the engine's tables (`alerts`, `motor_windows`, `late_events`)

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use tessera_core::WatermarkPolicy;
use tessera_stream::{StepOutput, StreamConfig, StreamEngine, conform};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Splits a script into statements (a statement ends with `;` at the end of a line).
fn statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').trim().to_string());
            current.clear();
        }
    }
    assert!(current.trim().is_empty(), "unterminated statement: {current}");
    out
}

fn describe_step(out: &StepOutput, transcript: &mut String) {
    let late: usize = out.late.iter().map(|b| b.num_rows()).sum();
    writeln!(transcript, "  closed {} window(s), {} late reading(s)", out.windows_closed, late).unwrap();
    for e in &out.alerts {
        writeln!(
            transcript,
            "  alert {} {} {} window_start={} severity={:?} score={:.4}",
            e.state.as_str(),
            e.query,
            e.motor_id,
            e.window_start_ms,
            e.severity,
            e.score.unwrap_or(f64::NAN)
        )
        .unwrap();
    }
}

async fn run_script(script: &str) -> String {
    let mut config = StreamConfig {
        watermark: WatermarkPolicy { allowed_lateness_ms: 0, idle_timeout_ms: 60_000 },
        table_rows: 100_000,
        table_bytes: usize::MAX,
        telemetry_rows: 0,
        quality: None,
        wear: None,
        shift: None,
    };
    let mut engine: Option<StreamEngine> = None;
    let scratch = SessionContext::new();
    let mut transcript = String::new();
    let mut seq = 0u64;
    for stmt in statements(script) {
        writeln!(transcript, "> {}", stmt.lines().map(str::trim).collect::<Vec<_>>().join(" ")).unwrap();
        let upper = stmt.to_uppercase();
        let number_after = |kw: &str| -> i64 {
            let rest = &stmt[upper.find(kw).expect("keyword") + kw.len()..];
            rest.split(|c: char| !c.is_ascii_digit() && c != '-')
                .find(|s| !s.is_empty())
                .expect("a number")
                .parse()
                .expect("a number")
        };
        if upper.starts_with("SET ") {
            assert!(engine.is_none(), "SET must come before the first query");
            let value = number_after("=");
            if upper.contains("ALLOWED_LATENESS") {
                config.watermark.allowed_lateness_ms = value;
            } else if upper.contains("IDLE_TIMEOUT") {
                config.watermark.idle_timeout_ms = value;
            } else {
                panic!("unknown setting: {stmt}");
            }
            continue;
        }
        let engine = engine.get_or_insert_with(|| StreamEngine::new(config));
        if upper.starts_with("CREATE CONTINUOUS QUERY") {
            match engine.register(&stmt).await {
                Ok(def) => writeln!(
                    transcript,
                    "  registered {} on {}",
                    def.name,
                    tessera_stream::engine::describe(&def.window)
                )
                .unwrap(),
                Err(e) => writeln!(transcript, "  error: {e}").unwrap(),
            }
        } else if upper.starts_with("PUSH AT") {
            let now = number_after("PUSH AT");
            let open = stmt.find('(').expect("column list");
            let close = stmt[open..].find(')').expect("column list") + open;
            let columns = &stmt[open + 1..close];
            let values = stmt[close + 1..].trim();
            assert!(values.to_uppercase().starts_with("VALUES"), "PUSH AT n (columns) VALUES ...");
            let sql = format!("SELECT * FROM ({values}) AS v({columns})");
            let batches = scratch.sql(&sql).await.expect("PUSH values").collect().await.expect("PUSH values");
            for b in batches {
                let batch = conform::to_telemetry(&b, &[], seq).expect("telemetry batch");
                seq += batch.num_rows() as u64;
                let out = engine.push(&batch, now).await.expect("push");
                describe_step(&out, &mut transcript);
            }
        } else if upper.starts_with("TICK AT") {
            let out = engine.tick(number_after("TICK AT")).await.expect("tick");
            describe_step(&out, &mut transcript);
        } else {
            match engine.sql(&stmt).await {
                Ok(batches) => writeln!(transcript, "{}", pretty_format_batches(&batches).expect("pretty")).unwrap(),
                Err(e) => writeln!(transcript, "  error: {e}").unwrap(),
            }
        }
    }
    transcript
}

#[tokio::test]
async fn golden_sql_scripts() {
    let bless = std::env::var_os("TESSERA_BLESS").is_some();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 4, "golden scripts are missing");
    let mut failures = Vec::new();
    for script in scripts {
        let got = run_script(&std::fs::read_to_string(&script).expect("script")).await;
        let expected_path = script.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!("{}:\n--- expected\n{expected}\n--- got\n{got}", script.display()));
        }
    }
    assert!(failures.is_empty(), "golden transcripts differ (TESSERA_BLESS=1 rewrites them):\n{}", failures.join("\n"));
}
