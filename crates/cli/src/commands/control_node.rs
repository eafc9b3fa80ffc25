//! `tessera control-node`: a control-plane (Raft) node on its own, every `[raft]` setting a
//! flag; it joins when `cluster init` or `cluster add-node` names it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use tessera_consensus::{ConsensusNode, RaftSettings};

use crate::args::TlsArgs;

/// `tessera control-node`: every `[raft]` setting as a flag (or `TESSERA_RAFT_*` variable).
#[derive(Args, Debug)]
pub struct ControlNodeArgs {
    /// This node's Raft id, unique in the cluster.
    #[arg(long, env = "TESSERA_RAFT_NODE_ID")]
    pub id: u64,
    /// The site this node runs at.
    #[arg(long, env = "TESSERA_RAFT_SITE")]
    pub site: String,
    /// Where the gRPC endpoint (Raft transport + admin API) listens.
    #[arg(long, env = "TESSERA_RAFT_LISTEN", default_value = "0.0.0.0:7070")]
    pub listen: SocketAddr,
    /// The address other nodes reach this one at (default: the listen address).
    #[arg(long, env = "TESSERA_RAFT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Where the Raft log, state machine and snapshots are kept.
    #[arg(long, env = "TESSERA_RAFT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Leader heartbeat period, ms.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Election timeout range, ms (lower bound).
    #[arg(long, default_value_t = 300)]
    pub election_timeout_min_ms: u64,
    /// Election timeout range, ms (upper bound).
    #[arg(long, default_value_t = 500)]
    pub election_timeout_max_ms: u64,
    /// Take a snapshot (and purge the log before it) every this many entries.
    #[arg(long, default_value_t = 5000)]
    pub snapshot_every_entries: u64,
    /// Entries kept before the snapshot for lagging followers.
    #[arg(long, default_value_t = 1000)]
    pub keep_entries_after_snapshot: u64,
    /// How long a write may wait for a quorum, ms.
    #[arg(long, default_value_t = 5000)]
    pub write_timeout_ms: u64,
    /// Allow `cluster partition` (tests only).
    #[arg(long)]
    pub fault_injection: bool,
    /// Without TLS, listen on a non-loopback address anyway: anyone who reaches the port can
    /// change the cluster.
    #[arg(long, env = "TESSERA_RAFT_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// The largest snapshot accepted from a leader, bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub max_snapshot_bytes: u64,
    /// mTLS: the node's certificate must be for `--id`.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl ControlNodeArgs {
    /// The node's settings.
    pub fn settings(&self) -> RaftSettings {
        RaftSettings {
            advertise: self.advertise.clone(),
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_every_entries: self.snapshot_every_entries,
            keep_entries_after_snapshot: self.keep_entries_after_snapshot,
            write_timeout_ms: self.write_timeout_ms,
            fault_injection: self.fault_injection,
            insecure_plaintext: self.insecure_plaintext,
            max_snapshot_bytes: self.max_snapshot_bytes,
            ..RaftSettings::new(self.id, self.site.clone(), self.listen, self.data_dir.clone())
        }
    }
}

/// Runs the node until `stop`.
pub fn run(args: ControlNodeArgs, stop: &AtomicBool) -> Result<()> {
    crate::runtime()?.block_on(serve(args, stop))
}

async fn serve(args: ControlNodeArgs, stop: &AtomicBool) -> Result<()> {
    let settings = args.settings();
    let node = ConsensusNode::start_with_tls(settings, args.tls.material()?).await?;
    println!("control-plane node {} ({}) serving on {}", args.id, args.site, node.addr());
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await?;
    println!("control-plane node {} stopped", args.id);
    Ok(())
}
