//! `tessera demo`: everything on one machine (see [`tessera_workload::demo`]).

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;
use tessera_workload::demo::{self, DemoOptions};

use crate::args::FleetArgs;

/// The flags of `tessera demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// The simulated fleet.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Publish one bad message per this many readings (0: none).
    #[arg(long, default_value_t = 5000)]
    pub bad_every: u64,
    /// Use this Kafka instead of the embedded one.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Site i's Flight SQL endpoint listens on 127.0.0.1 at this port plus i (0: any free port).
    #[arg(long, default_value_t = 50051)]
    pub sql_port: u16,
    /// Site i's /metrics and health checks at this port plus i (0: any free port).
    #[arg(long, default_value_t = 9464)]
    pub http_port: u16,
    /// Export traces to this OTLP/gRPC collector (e.g. http://127.0.0.1:4317).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Stop when the simulated span ends instead of serving SQL until Ctrl-C.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Nodes per site, in one consumer group per site, as the Helm chart runs them (3): a
    /// query at any node answers for its whole site. Node j of site i listens at the ports'
    /// base + i + j × sites.
    #[arg(long, default_value_t = 1)]
    pub nodes_per_site: u32,
    /// How long a SQL or web console session lasts before its user signs in again.
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,
}

/// Runs the demo until `stop` (or the simulated span's end, with `--exit-when-done`).
pub fn run(args: DemoArgs, stop: &AtomicBool) -> Result<()> {
    let f = args.fleet;
    let opts = DemoOptions {
        motors: f.motors,
        sites: f.sites,
        rate_hz: f.rate,
        duration: f.duration.unwrap_or(Duration::from_secs(180)),
        fault_fraction: f.fault_fraction,
        seed: f.seed,
        format: f.format,
        bad_every: args.bad_every,
        brokers: args.brokers,
        sql_port: args.sql_port,
        http_port: args.http_port,
        exit_when_done: args.exit_when_done,
        nodes_per_site: args.nodes_per_site,
        session_ttl: args.session_ttl,
    };
    demo::run(&opts, stop)?;
    Ok(())
}
