//! `tessera`: the command line. [`commands`] has one module per subcommand (its flags as a
//! clap `Args` struct and a `run`); this file parses the command line, sets up logging and
//! tracing, turns Ctrl-C / SIGTERM into a stop request, and runs the command. [`run`] is the
//! whole program (the binary's `main` only calls it), so that tests run the very commands
//! users run, signals included.

pub mod args;
pub mod commands;
pub mod files;
pub mod migration;
pub mod output;
mod signals;

use std::sync::atomic::AtomicBool;

use anyhow::Result;
use clap::Parser;

use commands::Command;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Distributed stream processing for industrial motor telemetry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Runs the command line `args` (the program name first) to the end. Ctrl-C (SIGINT) or
/// SIGTERM asks a long-running command to stop cleanly; a second one exits at once (130).
pub fn run<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut cli = Cli::parse_from(args);
    cli.command.load_config()?;
    // Logs to stderr; spans to OTLP when configured (a node's [telemetry], the demo's flag,
    // or OTEL_EXPORTER_OTLP_ENDPOINT).
    let (telemetry, log_filter) = cli.command.telemetry();
    let _telemetry = tessera_node::telemetry::init(&telemetry, log_filter)?;
    let stop = signals::stop_on_signals()?;
    cli.command.run(&stop)
}

/// Runs the command line `args` (the program name first) in this process as it is: no logging
/// set up, no signal handling; `stop` ends a long-running command. For tests and embedders.
pub fn run_in_process<I, T>(args: I, stop: &AtomicBool) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args)?.command.run(stop)
}

/// The runtime a command's async work runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}
