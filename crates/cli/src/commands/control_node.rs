//! `tessera control-node`: a control-plane (Raft) member on its own — the `[raft]` part of a
//! node, with the same keys. It reads a node config (`--config`, then `TESSERA__…`
//! variables: `site_id`, `[raft]`, `[tls]`), and each flag overrides one of its keys (the
//! flag's variable is the key's). It joins when `cluster init` or `cluster add-node` names it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use tessera_consensus::ConsensusNode;
use tessera_node::config::{NodeConfig, RaftConfig};

use crate::args::TlsArgs;

/// `tessera control-node`: a node config's `[raft]` part, each key also a flag.
#[derive(Args, Debug)]
pub struct ControlNodeArgs {
    /// A node config (see deploy/tessera.example.toml): its `site_id`, `[raft]` and `[tls]`
    /// are used; `TESSERA__SECTION__KEY` variables override it, and these flags override both.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's Raft id, unique in the cluster (`raft.node_id`).
    #[arg(long, env = "TESSERA__RAFT__NODE_ID")]
    pub id: Option<u64>,
    /// The site this node runs at (`site_id`).
    #[arg(long, env = "TESSERA__SITE_ID")]
    pub site: Option<String>,
    /// Where the gRPC endpoint (Raft transport + admin API) listens (`raft.listen`; default
    /// 0.0.0.0:7070).
    #[arg(long, env = "TESSERA__RAFT__LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The address other nodes reach this one at (`raft.advertise`; default: the listen
    /// address).
    #[arg(long, env = "TESSERA__RAFT__ADVERTISE")]
    pub advertise: Option<String>,
    /// Where the Raft log, state machine and snapshots are kept (`raft.data_dir`).
    #[arg(long, env = "TESSERA__RAFT__DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Leader heartbeat period (`raft.heartbeat`, e.g. 100ms).
    #[arg(long, env = "TESSERA__RAFT__HEARTBEAT", value_parser = duration)]
    pub heartbeat: Option<Duration>,
    /// Election timeout range, lower bound (`raft.election_timeout_min`, e.g. 300ms).
    #[arg(long, env = "TESSERA__RAFT__ELECTION_TIMEOUT_MIN", value_parser = duration)]
    pub election_timeout_min: Option<Duration>,
    /// Election timeout range, upper bound (`raft.election_timeout_max`, e.g. 500ms).
    #[arg(long, env = "TESSERA__RAFT__ELECTION_TIMEOUT_MAX", value_parser = duration)]
    pub election_timeout_max: Option<Duration>,
    /// How long a write may wait for a quorum (`raft.write_timeout`, e.g. 5s).
    #[arg(long, env = "TESSERA__RAFT__WRITE_TIMEOUT", value_parser = duration)]
    pub write_timeout: Option<Duration>,
    /// Take a snapshot (and purge the log before it) every this many entries
    /// (`raft.snapshot_every_entries`).
    #[arg(long, env = "TESSERA__RAFT__SNAPSHOT_EVERY_ENTRIES")]
    pub snapshot_every_entries: Option<u64>,
    /// Entries kept before the snapshot for lagging followers
    /// (`raft.keep_entries_after_snapshot`).
    #[arg(long, env = "TESSERA__RAFT__KEEP_ENTRIES_AFTER_SNAPSHOT")]
    pub keep_entries_after_snapshot: Option<u64>,
    /// Without TLS, listen on a non-loopback address anyway: anyone who reaches the port can
    /// change the cluster (`raft.insecure_plaintext`).
    #[arg(long, env = "TESSERA__RAFT__INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// The largest snapshot accepted from a leader, bytes (`raft.max_snapshot_bytes`).
    #[arg(long, env = "TESSERA__RAFT__MAX_SNAPSHOT_BYTES")]
    pub max_snapshot_bytes: Option<u64>,
    /// How long the leader goes without hearing from a member before it counts it down and
    /// replaces it as a voter (`raft.voter_down_after`, e.g. 10s).
    #[arg(long, env = "TESSERA__RAFT__VOTER_DOWN_AFTER", value_parser = duration)]
    pub voter_down_after: Option<Duration>,
    /// Allow `cluster partition`, which cuts this node off from others (tests only).
    #[arg(long)]
    pub fault_injection: bool,
    /// Deprecated: `--heartbeat` (milliseconds).
    #[arg(long, hide = true)]
    pub heartbeat_ms: Option<u64>,
    /// Deprecated: `--election-timeout-min` (milliseconds).
    #[arg(long, hide = true)]
    pub election_timeout_min_ms: Option<u64>,
    /// Deprecated: `--election-timeout-max` (milliseconds).
    #[arg(long, hide = true)]
    pub election_timeout_max_ms: Option<u64>,
    /// Deprecated: `--write-timeout` (milliseconds).
    #[arg(long, hide = true)]
    pub write_timeout_ms: Option<u64>,
    /// mTLS: the node's certificate must be for its id (`[tls]`).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// A duration flag: humantime text (`300ms`, `5s`), or a bare number of milliseconds (how the
/// `*_ms` keys were written).
pub fn duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
}

impl ControlNodeArgs {
    /// The node config with the flags applied: its `[raft]` section is what runs.
    pub fn config(&self) -> Result<NodeConfig> {
        // The node config's default site would pass silently: a member names its site.
        if self.site.is_none() && self.config.is_none() && std::env::var_os("TESSERA__SITE_ID").is_none() {
            anyhow::bail!("give --site (or site_id in --config, or TESSERA__SITE_ID)");
        }
        let mut deprecated = Vec::new();
        let config = NodeConfig::load_with(self.config.as_deref(), |config| {
            if let Some(site) = &self.site {
                config.site_id = site.clone();
            }
            let raft = config.raft.get_or_insert_with(RaftConfig::default);
            self.apply(raft, &mut deprecated);
        })?;
        for warning in deprecated.iter().chain(&config.deprecated) {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }

    /// Sets the `[raft]` keys the flags give; notes each deprecated flag used.
    fn apply(&self, raft: &mut RaftConfig, deprecated: &mut Vec<String>) {
        let ms = |d: &Duration| d.as_millis() as u64;
        let mut pick = |new: &Option<Duration>, old: Option<u64>, old_flag: &str, field: &mut u64| {
            if let Some(d) = new {
                *field = ms(d);
            } else if let Some(v) = old {
                deprecated
                    .push(format!("--{old_flag} is deprecated: use --{} {v}ms", old_flag.trim_end_matches("-ms")));
                *field = v;
            }
        };
        pick(&self.heartbeat, self.heartbeat_ms, "heartbeat-ms", &mut raft.heartbeat_ms);
        pick(
            &self.election_timeout_min,
            self.election_timeout_min_ms,
            "election-timeout-min-ms",
            &mut raft.election_timeout_min_ms,
        );
        pick(
            &self.election_timeout_max,
            self.election_timeout_max_ms,
            "election-timeout-max-ms",
            &mut raft.election_timeout_max_ms,
        );
        pick(&self.write_timeout, self.write_timeout_ms, "write-timeout-ms", &mut raft.write_timeout_ms);
        if let Some(d) = &self.voter_down_after {
            raft.voter_down_after_ms = ms(d);
        }
        if let Some(id) = self.id {
            raft.node_id = Some(id);
        }
        if let Some(listen) = self.listen {
            raft.listen = listen;
        }
        if let Some(advertise) = &self.advertise {
            raft.advertise = Some(advertise.clone());
        }
        if let Some(dir) = &self.data_dir {
            raft.data_dir = dir.clone();
        }
        if let Some(n) = self.snapshot_every_entries {
            raft.snapshot_every_entries = n;
        }
        if let Some(n) = self.keep_entries_after_snapshot {
            raft.keep_entries_after_snapshot = n;
        }
        if let Some(n) = self.max_snapshot_bytes {
            raft.max_snapshot_bytes = n;
        }
        raft.insecure_plaintext |= self.insecure_plaintext;
    }
}

/// Runs the node until `stop`.
pub fn run(args: ControlNodeArgs, stop: &AtomicBool) -> Result<()> {
    crate::runtime()?.block_on(serve(args, stop))
}

async fn serve(args: ControlNodeArgs, stop: &AtomicBool) -> Result<()> {
    let config = args.config()?;
    let raft = config.raft.as_ref().context("[raft] is missing")?;
    let id = raft.resolved_node_id()?;
    let settings =
        tessera_consensus::RaftSettings { fault_injection: args.fault_injection, ..raft.settings(id, &config.site_id) };
    let tls = match args.tls.files()?.or(config.tls.clone()) {
        Some(files) => Some(std::sync::Arc::new(tessera_tls::TlsMaterial::load(&files).map_err(|e| e.within("tls"))?)),
        None => None,
    };
    let node = ConsensusNode::start_with_tls(settings, tls).await?;
    println!("control-plane node {id} ({}) serving on {}", config.site_id, node.addr());
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await?;
    println!("control-plane node {id} stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControlNodeArgs,
    }

    fn raft(argv: &[&str]) -> (RaftConfig, Vec<String>) {
        let cli = Cli::try_parse_from(std::iter::once("control-node").chain(argv.iter().copied())).expect("parses");
        let mut raft = RaftConfig::default();
        let mut deprecated = Vec::new();
        cli.args.apply(&mut raft, &mut deprecated);
        (raft, deprecated)
    }

    #[test]
    fn durations_are_humantime_and_the_old_millisecond_flags_still_work_with_a_warning() {
        let (r, deprecated) =
            raft(&["--heartbeat", "150ms", "--election-timeout-min", "1s", "--write-timeout", "3000"]);
        assert_eq!((r.heartbeat_ms, r.election_timeout_min_ms, r.write_timeout_ms), (150, 1000, 3000));
        assert!(deprecated.is_empty());
        let (r, deprecated) = raft(&["--heartbeat-ms", "120", "--election-timeout-max-ms", "900"]);
        assert_eq!((r.heartbeat_ms, r.election_timeout_max_ms), (120, 900));
        assert_eq!(
            deprecated,
            [
                "--heartbeat-ms is deprecated: use --heartbeat 120ms",
                "--election-timeout-max-ms is deprecated: use --election-timeout-max 900ms"
            ]
        );
    }
}
