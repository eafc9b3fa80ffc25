//! `tessera sql` as users run it, as a process against a node's endpoint: a script on stdin
//! (statements over several lines, `\d`, `\o`, `\timing`), a file (`-f`), `--output json|csv`,
//! the interactive shell on a terminal (a pty from `script(1)`: prompts, history kept across
//! runs), and a script that stops at its first error with a failing exit status.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use tessera_sql::Role;

use crate::cli_process::{command, wrapper};
use crate::support::TestNode;
use crate::support::sql::{PASSWORD, user};

/// Runs `cmd` with `input` on its stdin.
fn with_stdin(mut cmd: Command, input: &str) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("tessera runs");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("tessera ends")
}

/// Runs `cmd` typing `input` on its stdin a line at a time, as a person would (a line editor
/// in raw mode drops what was typed ahead of its prompt).
fn typed(mut cmd: Command, input: &str) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("tessera runs");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in input.split_inclusive('\n') {
        std::thread::sleep(std::time::Duration::from_millis(500));
        stdin.write_all(line.as_bytes()).expect("write stdin");
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(stdin);
    child.wait_with_output().expect("tessera ends")
}

/// The JSON array that starts on a line of its own in `text` (libtest's lines around it).
pub(crate) fn json_array(text: &str) -> serde_json::Value {
    let start = text.lines().position(|l| l.starts_with('[')).unwrap_or_else(|| panic!("no JSON in {text}"));
    let lines: Vec<&str> = text.lines().skip(start).collect();
    let end = lines.iter().position(|l| l.ends_with(']')).expect("the array's end");
    serde_json::from_str(&lines[..=end].join("\n")).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_sql_client_runs_scripts_files_and_a_shell_with_table_json_and_csv_output() {
    let (_kafka, brokers) = crate::embedded_kafka(1, 1);
    let node =
        TestNode::new("site-a", &brokers, "cli-sql", "telemetry").sql(vec![user("root", Role::Admin, None)]).start();
    let at = node.sql_addr().expect("endpoint").to_string();
    let login = ["sql", "--at", &at, "--user", "root", "--password", PASSWORD];
    let dir = tempfile::tempdir().expect("tempdir");

    // A script on stdin: a statement over lines, a comment, \d, then JSON with timing.
    let script = "SELECT 1 AS one, -- a comment; not the end\n  'a;b' AS text\n;\n\\d\n\\o json\n\\timing on\nSELECT 2 AS two;\n";
    let out = with_stdin(command(&login), script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| 1   | a;b  |"), "the multi-line statement as a table: {stdout}");
    assert!(stdout.contains("| public       | alerts "), "\\d lists the tables: {stdout}");
    assert_eq!(json_array(&stdout), serde_json::json!([{"two": 2}]), "{stdout}");
    assert!(stderr.contains("(1 row, "), "\\timing: {stderr}");

    // A file, as CSV.
    let file = dir.path().join("queries.sql");
    std::fs::write(&file, "SELECT 3 AS x, 'p,q' AS y;\n").expect("write");
    let mut args = login.to_vec();
    args.extend(["-f", file.to_str().expect("utf-8"), "--output", "csv"]);
    let out = command(&args).output().expect("tessera runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("x,y\n3,\"p,q\"\n"), "{stdout}");

    // A script stops at its first error, saying where, and fails.
    let out = with_stdin(command(&login), "SELECT 4 AS four;\nSELECT * FROM no_such_table;\nSELECT 5 AS five;\n");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("| 4    |") && !stdout.contains("five"), "{stdout}");
    assert!(stderr.contains("at line 2") && stderr.contains("no_such_table"), "{stderr}");

    // The shell on a terminal: prompts, a statement over two lines, history kept.
    let tessera = wrapper(dir.path());
    let state = dir.path().join("state");
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let line = std::iter::once(tessera.display().to_string())
        .chain(login.iter().map(|a| a.to_string()))
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let shell = |input: &str| {
        let mut cmd = Command::new("script");
        cmd.args(["-qfec", &line, "/dev/null"]).env("XDG_STATE_HOME", &state);
        typed(cmd, input)
    };
    let out = shell("SELECT 6 AS six\n;\n\\q\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("tessera> ") && text.contains("     -> "), "prompts: {text}");
    assert!(text.contains("| 6   |"), "{text}");
    let history = std::fs::read_to_string(state.join("tessera/sql_history")).expect("history kept");
    assert!(history.contains("SELECT 6 AS six"), "{history}");
    // An error in the shell is printed, and the shell goes on.
    let out = shell("SELECT * FROM nowhere;\nSELECT 7 AS seven;\n\\q\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("error: ") && text.contains("| 7     |"), "{text}");
    node.stop().expect("the node stops");
}
