//! The subcommands, one module each: its flags (a clap `Args` struct or `Subcommand` enum)
//! and a `run`.

pub mod cert;
pub mod cluster;
pub mod completions;
pub mod control_node;
pub mod demo;
pub mod eval;
pub mod hash_secret;
pub mod man;
pub mod node;
pub mod query;
pub mod replay;
pub mod simulate;
pub mod sql;
pub mod store;

use std::sync::atomic::AtomicBool;

use anyhow::Result;
use clap::Subcommand;
use tessera_node::telemetry::{LogConfig, TelemetryConfig, resource_attributes};

/// Every `tessera` subcommand.
#[derive(Subcommand)]
#[allow(missing_docs)] // variant fields are documented by their flags' help
pub enum Command {
    /// Everything on one machine: embedded Kafka, 3 sites in one Raft group, a simulated fleet
    /// with faults, continuous queries, alerts, Flight SQL on 127.0.0.1. Ctrl-C stops it.
    Demo(demo::DemoArgs),
    /// mTLS certificates: the cluster CA, node and operator certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// The site-local store: key-encryption keys, segments, shredding.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// SQL against a node's Flight SQL endpoint: one statement, a file (-f), or an interactive
    /// shell (history, multi-line statements, \d, \timing); results as a table, JSON or CSV.
    Sql(sql::SqlArgs),
    /// Hash a secret read from stdin for the `[sql]` config: an Argon2id `password_hash` for
    /// `[[sql.users]]`, or the `sha256` of a bearer token for `[[sql.tokens]]`.
    HashSecret(hash_secret::HashSecretArgs),
    /// Publish a simulated fleet's telemetry to Kafka, with injected faults and ground truth.
    Simulate(simulate::SimulateArgs),
    /// Publish CSV files as motors (one file, one motor), labels stripped into ground truth.
    Replay(replay::ReplayArgs),
    /// Run a node as configured (see deploy/tessera.example.toml): ingest, continuous queries
    /// and alerts, and as its config says a Raft member, Flight SQL, /metrics and health checks,
    /// the site store. Runs until Ctrl-C or SIGTERM, then stops cleanly.
    #[command(alias = "ingest")]
    Node(node::NodeArgs),
    /// Replay the labelled data (SKAB valve1 + anomaly-free, NAB) through an embedded Kafka into
    /// the pipeline and score the alerts against the labels.
    Eval(eval::EvalArgs),
    /// Run a control-plane (Raft) node until Ctrl-C; it joins when `cluster init` or
    /// `cluster add-node` names it.
    ControlNode(control_node::ControlNodeArgs),
    /// Cluster membership, status, sites, motors, policies and the audit log.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Continuous queries: registered once, run by every site on its own motors.
    Query {
        #[command(subcommand)]
        command: query::QueryCommand,
    },
    /// Print a shell's completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Write the man pages (tessera.1 and one per subcommand), or print tessera.1.
    Man(man::ManArgs),
}

impl Command {
    /// Loads what the command needs before logging is set up: a node's config file (read
    /// once; [`Command::telemetry`] and the node use it).
    pub fn load_config(&mut self) -> Result<()> {
        if let Command::Node(args) = self {
            args.load()?;
        }
        Ok(())
    }

    /// Where this command's spans go, how its log lines look, and its default log filter: a
    /// node's `[telemetry]` and `[log]`, the demo's `--otlp-endpoint`, else only
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn telemetry(&self) -> (TelemetryConfig, LogConfig, &'static str) {
        match self {
            Command::Node(args) => {
                let config = args.loaded();
                let mut telemetry = config.map(|c| c.telemetry.clone()).unwrap_or_default();
                let node_id = config.and_then(|c| c.raft.as_ref()).and_then(|r| r.resolved_node_id().ok());
                telemetry.resource = resource_attributes(config.map(|c| c.site_id.as_str()), node_id);
                (telemetry, config.map(|c| c.log.clone()).unwrap_or_default(), "warn,tessera=info")
            }
            // The demo's own output is the story; logs only for what goes wrong.
            Command::Demo(args) => (
                TelemetryConfig {
                    otlp_endpoint: args.otlp_endpoint.clone(),
                    resource: resource_attributes(None, None),
                    ..Default::default()
                },
                LogConfig::default(),
                "warn,openraft=error",
            ),
            _ => (TelemetryConfig::default(), LogConfig::default(), "warn,tessera=info"),
        }
    }

    /// Runs the command; `stop` asks a long-running one to end cleanly.
    pub fn run(self, stop: &AtomicBool) -> Result<()> {
        match self {
            Command::Demo(args) => demo::run(args, stop),
            Command::Cert(command) => cert::run_command(command),
            Command::Store(command) => store::run(command),
            Command::Sql(args) => sql::run(&args),
            Command::HashSecret(args) => hash_secret::run(&args),
            Command::Simulate(args) => simulate::run(args, stop),
            Command::Replay(args) => replay::run(args, stop),
            Command::Node(args) => node::run(args, stop),
            Command::Eval(args) => eval::run(args),
            Command::ControlNode(args) => control_node::run(args, stop),
            Command::Cluster { command } => cluster::run(command),
            Command::Query { command } => query::run(command),
            Command::Completions(args) => completions::run(&args),
            Command::Man(args) => man::run(&args),
        }
    }
}
