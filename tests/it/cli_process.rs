//! `tessera` as a separate process, from the test binary: [`command`] starts this executable
//! again running [`tessera_process`], an ignored test that hands its arguments (passed in
//! environment variables, as libtest owns the command line) to `tessera_cli::run`,
//! the whole of the `tessera` binary's `main`, signals included. [`wrapper`] writes a
//! `tessera` shell script that does the same, for scripts that run `$TESSERA_BIN`.

use std::path::{Path, PathBuf};
use std::process::Command;

const ARGC: &str = "TESSERA_CLI_ARGC";

fn arg_var(i: usize) -> String {
    format!("TESSERA_CLI_ARG_{i}")
}

/// Runs `tessera` with the arguments in the environment; a no-op without them.
#[test]
#[ignore = "the tessera process of other tests"]
fn tessera_process() {
    let Some(argc) = std::env::var(ARGC).ok().and_then(|n| n.parse::<usize>().ok()) else { return };
    let args: Vec<String> = (0..argc).map(|i| std::env::var(arg_var(i)).expect("argument")).collect();
    tessera_cli::run(std::iter::once("tessera".to_string()).chain(args)).expect("tessera ends without an error");
}

const LIBTEST_ARGS: [&str; 7] =
    ["--ignored", "--exact", "cli_process::tessera_process", "--nocapture", "--test-threads", "1", "-q"];

/// `tessera ARGS...` as a process.
pub(crate) fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(LIBTEST_ARGS).env(ARGC, args.len().to_string());
    for (i, a) in args.iter().enumerate() {
        cmd.env(arg_var(i), a);
    }
    cmd
}

/// Writes an executable `tessera` script into `dir` that runs `tessera "$@"` as [`command`] does.
pub(crate) fn wrapper(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let exe = std::env::current_exe().expect("the test binary");
    let script = format!(
        "#!/bin/sh\n# tessera, run by the integration-test binary (tests/it/cli_process.rs)\nn=0\nfor a in \"$@\"; do export \"TESSERA_CLI_ARG_$n=$a\"; n=$((n+1)); done\nexport {ARGC}=$n\nexec '{}' {}\n",
        exe.display(),
        LIBTEST_ARGS.join(" ")
    );
    let path = dir.join("tessera");
    std::fs::write(&path, script).expect("write the wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}
