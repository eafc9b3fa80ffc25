//! The node as a member of the cluster's control plane (`[raft]`): a Raft node in the same
//! process, its id from the config or the pod's ordinal, and on a first start the cluster
//! initialised by the member with the lowest id among `raft.initial_members`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_core::ConfigError;

use crate::error::NodeError;
use crate::lifecycle::{Shutdown, Tasks};

/// The `[raft]` section: the node runs a control-plane member in its own process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// This node's Raft id, unique in the cluster; unset: `id_base` plus the pod's ordinal
    /// (`TESSERA_POD_ORDINAL`, else the `-N` suffix of the host name, as a StatefulSet names
    /// its pods).
    pub node_id: Option<u64>,
    /// See `node_id`: one base per site keeps the sites' ids apart (site a 100.., b 200..).
    pub id_base: u64,
    /// Where the Raft and admin gRPC endpoint listens.
    pub listen: SocketAddr,
    /// The address other nodes reach this one at (default: the listen address).
    pub advertise: Option<String>,
    /// The Raft log, state machine and snapshots (site-local durable disk).
    pub data_dir: PathBuf,
    /// The cluster's first members, `ID=SITE@HOST:PORT`. On its first start the member with
    /// the lowest id initialises the cluster with them (no `tessera cluster init` needed);
    /// later starts, and every other member, ignore it. Empty: an operator initialises.
    pub initial_members: Vec<String>,
    /// Leader heartbeat period, ms (config key `heartbeat`, a duration such as `"100ms"`;
    /// `heartbeat_ms` is read too, deprecated).
    #[serde(rename = "heartbeat", with = "tessera_core::duration_millis")]
    pub heartbeat_ms: u64,
    /// Election timeout range, ms (`election_timeout_min`); raise both between sites with
    /// slow links.
    #[serde(rename = "election_timeout_min", with = "tessera_core::duration_millis")]
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms` (`election_timeout_max`).
    #[serde(rename = "election_timeout_max", with = "tessera_core::duration_millis")]
    pub election_timeout_max_ms: u64,
    /// How long a write may wait for a quorum, ms (`write_timeout`).
    #[serde(rename = "write_timeout", with = "tessera_core::duration_millis")]
    pub write_timeout_ms: u64,
    /// A snapshot is taken every this many applied entries; the log before it is purged.
    pub snapshot_every_entries: u64,
    /// Entries kept before the snapshot, so that slightly lagging followers catch up from the
    /// log rather than from a snapshot.
    pub keep_entries_after_snapshot: u64,
    /// Without `[tls]`, the member listens only on a loopback address; `true` allows any
    /// address in plaintext, where anyone who reaches the port can change the cluster (the
    /// node warns at start, and `/readyz` says so).
    pub insecure_plaintext: bool,
    /// The largest snapshot the member accepts from a leader, bytes.
    pub max_snapshot_bytes: u64,
    /// How long the leader goes without hearing from a member before it counts it down, ms
    /// (`voter_down_after`, a duration): a down voter is replaced by a healthy learner.
    #[serde(rename = "voter_down_after", with = "tessera_core::duration_millis")]
    pub voter_down_after_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        let d = tessera_consensus::RaftSettings::new(0, "", "0.0.0.0:7070".parse().expect("address"), "");
        Self {
            node_id: None,
            id_base: 0,
            listen: d.listen,
            advertise: None,
            data_dir: PathBuf::new(),
            initial_members: Vec::new(),
            heartbeat_ms: d.heartbeat_ms,
            election_timeout_min_ms: d.election_timeout_min_ms,
            election_timeout_max_ms: d.election_timeout_max_ms,
            write_timeout_ms: d.write_timeout_ms,
            snapshot_every_entries: d.snapshot_every_entries,
            keep_entries_after_snapshot: d.keep_entries_after_snapshot,
            insecure_plaintext: d.insecure_plaintext,
            max_snapshot_bytes: d.max_snapshot_bytes,
            voter_down_after_ms: d.voter_down_after_ms,
        }
    }
}

impl RaftConfig {
    /// The node's Raft id: `node_id`, or `id_base` plus the pod ordinal (see `node_id`).
    pub fn resolved_node_id(&self) -> Result<u64, ConfigError> {
        if let Some(id) = self.node_id {
            return Ok(id);
        }
        let ordinal = match std::env::var("TESSERA_POD_ORDINAL") {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| ConfigError::new("raft.node_id", format!("TESSERA_POD_ORDINAL={v:?} is not a number")))?,
            Err(_) => {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                    .unwrap_or_default();
                let host = host.trim();
                host.rsplit_once('-').and_then(|(_, n)| n.parse::<u64>().ok()).ok_or_else(|| {
                    ConfigError::new(
                        "raft.node_id",
                        format!("is unset and neither TESSERA_POD_ORDINAL nor the host name ({host:?}, no -N suffix) gives an ordinal"),
                    )
                })?
            }
        };
        Ok(self.id_base + ordinal)
    }

    /// The consensus settings for node `id` at `site`.
    pub fn settings(&self, id: u64, site: &str) -> tessera_consensus::RaftSettings {
        tessera_consensus::RaftSettings {
            advertise: self.advertise.clone(),
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            write_timeout_ms: self.write_timeout_ms,
            snapshot_every_entries: self.snapshot_every_entries,
            keep_entries_after_snapshot: self.keep_entries_after_snapshot,
            insecure_plaintext: self.insecure_plaintext,
            max_snapshot_bytes: self.max_snapshot_bytes,
            voter_down_after_ms: self.voter_down_after_ms,
            ..tessera_consensus::RaftSettings::new(id, site, self.listen, self.data_dir.clone())
        }
    }

    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        tessera_core::ensure(
            !self.data_dir.as_os_str().is_empty(),
            "data_dir",
            "must be set (the Raft log's directory)",
        )?;
        for (i, m) in self.initial_members.iter().enumerate() {
            super::parse_node_spec(m).map_err(|e| ConfigError::new(format!("initial_members[{i}]"), e.to_string()))?;
        }
        self.settings(1, "site").raft_config().map(drop).map_err(|e| match e {
            tessera_consensus::ConsensusError::Config(e) => {
                ConfigError::new(e.field.trim_start_matches("raft."), e.problem)
            }
            other => ConfigError::new("", other.to_string()),
        })
    }
}

/// Starts the node's Raft member on `runtime` and, if it has the lowest id among
/// `initial_members`, initialises the cluster in the background (once the others answer; the
/// task gives up at `shutdown`).
pub fn start(
    raft: &RaftConfig,
    site: &str,
    tls: Option<Arc<tessera_tls::TlsMaterial>>,
    runtime: &tokio::runtime::Runtime,
    tasks: &mut Tasks,
    shutdown: Shutdown,
) -> Result<tessera_consensus::ConsensusNode, NodeError> {
    let id = raft.resolved_node_id()?;
    let node = runtime
        .block_on(tessera_consensus::ConsensusNode::start_with_tls(raft.settings(id, site), tls))
        .map_err(|source| NodeError::Failed { part: "Raft member", source: Box::new(NodeError::Consensus(source)) })?;
    let members: Vec<(u64, String, String)> = raft
        .initial_members
        .iter()
        .map(|m| super::parse_node_spec(m).map(|n| (n.id, n.site, n.addr)))
        .collect::<Result<_, _>>()?;
    if members.iter().map(|m| m.0).min() == Some(id) {
        let bootstrap = node.bootstrap(&members, std::time::Duration::from_secs(600));
        tasks.spawn(runtime, "cluster bootstrap", async move {
            tokio::select! {
                done = bootstrap => match done {
                    Ok(true) => tracing::info!(target: "tessera::audit", node = id, members = members.len(), "initialised the cluster (raft.initial_members)"),
                    Ok(false) => tracing::debug!(node = id, "the cluster was initialised before"),
                    Err(e) => tracing::error!(node = id, error = %tessera_core::error_chain(&e), "could not initialise the cluster; `tessera cluster init` can"),
                },
                () = shutdown.wait() => {}
            }
            Ok(())
        });
    }
    tracing::info!(node = id, %site, addr = %node.addr(), "Raft member started");
    Ok(node)
}
