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
use clap::{CommandFactory as _, FromArgMatches as _, Parser};

use commands::Command;
use tessera_node::telemetry::{LogConfig, LogFormat};

/// The command line: the global flags and a subcommand.
#[derive(Parser)]
#[command(name = "tessera", version, about = "Distributed stream processing for industrial motor telemetry")]
pub struct Cli {
    /// Log lines on stderr as text or json (one object per line); default: a node's `[log]
    /// format`, else text. Which lines: RUST_LOG.
    #[arg(long, global = true, env = "TESSERA__LOG__FORMAT", value_parser = |s: &str| s.parse::<LogFormat>())]
    log_format: Option<LogFormat>,
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
    let (command, renamed) = with_renamed_variables(Cli::command());
    let mut cli = Cli::from_arg_matches(&command.get_matches_from(args)).unwrap_or_else(|e| e.exit());
    for (old, new) in renamed {
        eprintln!("warning: {old} is deprecated: use {new}");
    }
    cli.command.load_config()?;
    // Logs to stderr; spans to OTLP when configured (a node's [telemetry], the demo's flag,
    // or OTEL_EXPORTER_OTLP_ENDPOINT).
    let (telemetry, mut log, log_filter) = cli.command.telemetry();
    if let Some(format) = cli.log_format {
        log = LogConfig { format };
    }
    let _telemetry = tessera_node::telemetry::init(&telemetry, &log, log_filter)?;
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
    let (command, _) = with_renamed_variables(Cli::command());
    Cli::from_arg_matches(&command.try_get_matches_from(args)?)?.command.run(stop)
}

/// Variables of flags renamed into the one scheme: `TESSERA__` and the config key a flag sets
/// (`TESSERA__RAFT__LISTEN`), or `TESSERA__CLIENT__…` for the clients' own flags. The old
/// names are still read, with a warning.
const RENAMED_VARIABLES: [(&str, &str); 15] = [
    ("TESSERA_SQL", "TESSERA__CLIENT__SQL"),
    ("TESSERA_SQL_USER", "TESSERA__CLIENT__USER"),
    ("TESSERA_SQL_PASSWORD", "TESSERA__CLIENT__PASSWORD"),
    ("TESSERA_SQL_TOKEN", "TESSERA__CLIENT__TOKEN"),
    ("TESSERA_ADMIN", "TESSERA__CLIENT__ADMIN"),
    ("TESSERA_ACTOR", "TESSERA__CLIENT__ACTOR"),
    ("TESSERA_TLS_CA", "TESSERA__TLS__CA"),
    ("TESSERA_TLS_CERT", "TESSERA__TLS__CERT"),
    ("TESSERA_TLS_KEY", "TESSERA__TLS__KEY"),
    ("TESSERA_RAFT_NODE_ID", "TESSERA__RAFT__NODE_ID"),
    ("TESSERA_RAFT_SITE", "TESSERA__SITE_ID"),
    ("TESSERA_RAFT_LISTEN", "TESSERA__RAFT__LISTEN"),
    ("TESSERA_RAFT_ADVERTISE", "TESSERA__RAFT__ADVERTISE"),
    ("TESSERA_RAFT_DATA_DIR", "TESSERA__RAFT__DATA_DIR"),
    ("TESSERA_RAFT_INSECURE_PLAINTEXT", "TESSERA__RAFT__INSECURE_PLAINTEXT"),
];

/// `command` reading each renamed variable's old name where only the old one is set; returns
/// the `(old, new)` pairs it did that for.
fn with_renamed_variables(command: clap::Command) -> (clap::Command, Vec<(&'static str, &'static str)>) {
    let used: Vec<(&str, &str)> = RENAMED_VARIABLES
        .into_iter()
        .filter(|(old, new)| std::env::var_os(old).is_some() && std::env::var_os(new).is_none())
        .collect();
    let command = used.iter().fold(command, |c, (old, new)| read_old_variable(c, new, old));
    (command, used)
}

/// Every flag of `command` and its subcommands read from `new` is read from `old` instead.
fn read_old_variable(command: clap::Command, new: &str, old: &'static str) -> clap::Command {
    let command = command.mut_args(|a| if a.get_env() == Some(std::ffi::OsStr::new(new)) { a.env(old) } else { a });
    let names: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_string()).collect();
    names.iter().fold(command, |c, name| c.mut_subcommand(name, |s| read_old_variable(s, new, old)))
}

/// The runtime a command's async work runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag (and positional) of every command, with its command's path.
    fn every_arg(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in command.get_arguments() {
            out.push((path.to_string(), arg.clone()));
        }
        for sub in command.get_subcommands() {
            every_arg(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_has_help_and_every_variable_follows_the_one_scheme() {
        let mut args = Vec::new();
        every_arg(&Cli::command(), "tessera", &mut args);
        assert!(args.len() > 100, "{}", args.len());
        for (path, arg) in &args {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" || arg.is_hide_set() {
                continue;
            }
            assert!(
                arg.get_help().is_some_and(|h| !h.to_string().trim().is_empty()),
                "{path}: --{id} has no help text"
            );
            if let Some(var) = arg.get_env() {
                let var = var.to_string_lossy();
                assert!(var.starts_with("TESSERA__") && var == var.to_ascii_uppercase(), "{path}: --{id} reads {var}");
            }
        }
    }

    #[test]
    fn an_old_variable_is_read_where_the_new_one_is_not_set() {
        let command = read_old_variable(Cli::command(), "TESSERA__CLIENT__SQL", "TESSERA_SQL");
        let sql = command.find_subcommand("sql").expect("sql");
        let at = sql.get_arguments().find(|a| a.get_id() == "at").expect("--at");
        assert_eq!(at.get_env(), Some(std::ffi::OsStr::new("TESSERA_SQL")));
    }
}
