//! A running control-plane node: its storage opened, openraft started, and its gRPC endpoint
//! (Raft transport and admin API on one port) serving, over mTLS when the node has `[tls]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_proto::raft::cluster_admin_server::ClusterAdminServer;
use tessera_proto::raft::raft_transport_server::RaftTransportServer;
use tessera_tls::{ClientAuth, ClientTls, Refusals, ServerTls, TlsMaterial};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tessera_core::{ConfigError, ensure};

use crate::Raft;
use crate::error::ConsensusError;
use crate::error::DeskError;
use crate::log_store::LogStore;
use crate::network::{Network, Partition};
use crate::service::{AdminService, Shared, TransportService, keep_voters_balanced};
use crate::state_machine::{RegistryView, StateMachine};
use crate::types::{Command, Outcome};
use crate::types::{Member, NodeId};
use openraft::async_runtime::WatchReceiver;

/// Largest gRPC message a node accepts (a snapshot chunk is 1 MiB; a log batch stays small).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A node's control-plane settings (the `[raft]` section of the node's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    /// This node's Raft id, unique in the cluster.
    pub node_id: NodeId,
    /// The site this node runs at.
    pub site: String,
    /// Where the gRPC endpoint listens (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The address other nodes use to reach this one (default: `listen`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Where the log, the state machine and snapshots are kept (site-local disk).
    pub data_dir: PathBuf,
    /// Leader heartbeat period.
    #[serde(default = "defaults::heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in `[min, max)` starts an election.
    /// Followers refuse votes while the last leader's lease (`max` since its last heartbeat)
    /// lasts, so a failover takes about `max` plus one more timeout: 0.6–1 s with the defaults.
    /// Between sites with slow links, raise both (and `heartbeat_ms`).
    #[serde(default = "defaults::election_timeout_min_ms")]
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    #[serde(default = "defaults::election_timeout_max_ms")]
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken every this many applied entries; the log before it is then purged.
    #[serde(default = "defaults::snapshot_every_entries")]
    pub snapshot_every_entries: u64,
    /// How many entries before the snapshot are kept (so that slightly lagging followers
    /// catch up from the log rather than from a snapshot).
    #[serde(default = "defaults::keep_entries_after_snapshot")]
    pub keep_entries_after_snapshot: u64,
    /// How long a write (or read barrier) may wait for a quorum before it fails.
    #[serde(default = "defaults::write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Enables the admin API's `SetPartition` (partition tests only).
    #[serde(default)]
    pub fault_injection: bool,
    /// Without TLS, a node listens only on a loopback address: anyone who reaches a plaintext
    /// port can change the cluster. `true` allows any address in plaintext anyway (a node then
    /// warns at start and its readiness check says so).
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// The largest snapshot this node accepts from a leader; a larger one is refused before it
    /// is buffered whole.
    #[serde(default = "defaults::max_snapshot_bytes")]
    pub max_snapshot_bytes: u64,
    /// A member the leader has not heard from for this long counts as down: a voter that is
    /// down is replaced by a healthy learner (on another site where one is free), and a down
    /// member is never promoted. Also how long a new leader waits before its first rebalance.
    #[serde(default = "defaults::voter_down_after_ms")]
    pub voter_down_after_ms: u64,
}

mod defaults {
    pub(super) fn max_snapshot_bytes() -> u64 {
        256 << 20
    }
    pub(super) fn heartbeat_ms() -> u64 {
        100
    }
    pub(super) fn election_timeout_min_ms() -> u64 {
        300
    }
    pub(super) fn election_timeout_max_ms() -> u64 {
        500
    }
    pub(super) fn snapshot_every_entries() -> u64 {
        5000
    }
    pub(super) fn keep_entries_after_snapshot() -> u64 {
        1000
    }
    pub(super) fn write_timeout_ms() -> u64 {
        5000
    }
    pub(super) fn voter_down_after_ms() -> u64 {
        10_000
    }
}

impl RaftSettings {
    /// Settings with every tunable at its default.
    pub fn new(node_id: NodeId, site: impl Into<String>, listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id,
            site: site.into(),
            listen,
            advertise: None,
            data_dir: data_dir.into(),
            heartbeat_ms: defaults::heartbeat_ms(),
            election_timeout_min_ms: defaults::election_timeout_min_ms(),
            election_timeout_max_ms: defaults::election_timeout_max_ms(),
            snapshot_every_entries: defaults::snapshot_every_entries(),
            keep_entries_after_snapshot: defaults::keep_entries_after_snapshot(),
            write_timeout_ms: defaults::write_timeout_ms(),
            fault_injection: false,
            insecure_plaintext: false,
            max_snapshot_bytes: defaults::max_snapshot_bytes(),
            voter_down_after_ms: defaults::voter_down_after_ms(),
        }
    }

    /// openraft's config from these settings; an out-of-range value names its field.
    pub fn raft_config(&self) -> Result<openraft::Config, ConsensusError> {
        // Field names as the config writes them (`[raft] heartbeat = "100ms"`).
        ensure(self.heartbeat_ms > 0, "raft.heartbeat", "must be positive")?;
        if self.election_timeout_min_ms <= self.heartbeat_ms {
            return Err(ConfigError::new(
                "raft.election_timeout_min",
                format!("{} ms must exceed raft.heartbeat ({} ms)", self.election_timeout_min_ms, self.heartbeat_ms),
            )
            .into());
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(ConfigError::new(
                "raft.election_timeout_max",
                format!(
                    "{} ms must exceed raft.election_timeout_min ({} ms)",
                    self.election_timeout_max_ms, self.election_timeout_min_ms
                ),
            )
            .into());
        }
        if self.voter_down_after_ms <= self.election_timeout_max_ms {
            return Err(ConfigError::new(
                "raft.voter_down_after",
                format!(
                    "{} ms must exceed raft.election_timeout_max ({} ms): a member is down only after it missed an election's worth of heartbeats",
                    self.voter_down_after_ms, self.election_timeout_max_ms
                ),
            )
            .into());
        }
        ensure(self.snapshot_every_entries > 0, "raft.snapshot_every_entries", "must be positive")?;
        ensure(self.write_timeout_ms > 0, "raft.write_timeout", "must be positive")?;
        ensure(self.max_snapshot_bytes > 0, "raft.max_snapshot_bytes", "must be positive")?;
        if tessera_core::SiteId::new(self.site.as_str()).is_err() {
            return Err(ConfigError::new("raft.site", format!("'{}' is not a valid site id", self.site)).into());
        }
        let config = openraft::Config {
            cluster_name: "tessera".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.keep_entries_after_snapshot,
            ..Default::default()
        };
        // openraft's own check; its error is text about its fields, kept as the problem.
        config.validate().map_err(|e| ConfigError::new("raft", e.to_string()).into())
    }

    fn advertised(&self, bound: SocketAddr) -> String {
        self.advertise.clone().unwrap_or_else(|| bound.to_string())
    }
}

/// A running control-plane node.
pub struct ConsensusNode {
    raft: Raft,
    view: RegistryView,
    addr: SocketAddr,
    advertised: String,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// The leader's voter keeper (see `service::rebalance`).
    voter_keeper: JoinHandle<()>,
    refusals: Arc<Refusals>,
    shared: Shared,
    /// Serving in plaintext on a non-loopback address (`insecure_plaintext`).
    plaintext_exposed: bool,
}

/// Records acknowledgements of this node's site's alerts in the control plane, for people who
/// signed in at this node (the web console and the JSON API). The node proposes as itself
/// (so another site's leader accepts it only for this site's alerts); the actor the audit
/// log records names the person and the node.
#[derive(Clone)]
pub struct AlertDesk(Shared);

impl AlertDesk {
    /// Proposes `command` (an [`Command::AcknowledgeAlert`]) for `user`; the outcome is the
    /// registry's (`Rejected` with its reason when it refused), or an error when no quorum
    /// answered within the write timeout.
    pub async fn record(&self, user: &str, command: Command) -> Result<Outcome, DeskError> {
        if !matches!(command, Command::AcknowledgeAlert { .. }) {
            return Err(DeskError::Refused("only alert acknowledgements go through the alert desk".into()));
        }
        let who = self.0.itself();
        let actor = format!("{user} (at node {} of site {})", self.0.me, self.0.site);
        let refused = |e: crate::service::ServiceError| DeskError::Refused(e.to_string());
        let request = self.0.request(&actor, command).map_err(refused)?;
        self.0.allow(&who, crate::service::Action::Write(&request.command)).map_err(refused)?;
        let reply = self.0.write(request, &who, false).await.map_err(|e| DeskError::Unavailable(e.to_string()))?;
        Ok(if reply.rejected.is_empty() { Outcome::Applied } else { Outcome::Rejected(reply.rejected) })
    }

    /// The term and the leader as this node's member sees them.
    pub fn status(&self) -> RaftStatus {
        RaftStatus::of(&self.0.raft)
    }

    /// The applied registry (acknowledgements are in [`crate::registry::Registry::acks`]).
    pub fn registry(&self) -> RegistryView {
        self.0.view.clone()
    }
}

/// What a node knows of the cluster right now (for metrics and health checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of, if any.
    pub leader: Option<NodeId>,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// The index of the last applied log entry.
    pub applied_index: Option<u64>,
    /// Voters in the current membership (0 before initialisation).
    pub voters: usize,
}

impl RaftStatus {
    /// What `raft` knows now (cheap: a copy of its metrics).
    pub fn of(raft: &Raft) -> Self {
        let m = raft.metrics().borrow_watched().clone();
        RaftStatus {
            node_id: m.id,
            term: m.current_term,
            leader: m.current_leader,
            is_leader: m.current_leader == Some(m.id),
            applied_index: m.last_applied.map(|l| l.index),
            voters: m.membership_config.membership().voter_ids().count(),
        }
    }
}

impl ConsensusNode {
    /// Opens the node's storage, starts Raft and serves the gRPC endpoint in the clear. The
    /// node joins a cluster when a member (or `Init`) adds it.
    pub async fn start(settings: RaftSettings) -> Result<Self, ConsensusError> {
        Self::start_with_tls(settings, None).await
    }

    /// [`Self::start`], with mTLS when `tls` is given: every client (node or operator) must
    /// present a certificate from the cluster CA, a Raft message's sender must be the node its
    /// certificate names, and this node's certificate must be for `settings.node_id`.
    pub async fn start_with_tls(settings: RaftSettings, tls: Option<Arc<TlsMaterial>>) -> Result<Self, ConsensusError> {
        if let Some(material) = &tls
            && material.identity().node_id() != Some(settings.node_id)
        {
            let problem = format!("the certificate is for {}, not node {}", material.identity(), settings.node_id);
            return Err(ConfigError::new("tls.cert", problem).into());
        }
        let config = Arc::new(settings.raft_config()?);
        let plaintext_exposed = tls.is_none() && !settings.listen.ip().is_loopback();
        if plaintext_exposed && !settings.insecure_plaintext {
            let problem = format!(
                "{} is not a loopback address, and without [tls] anyone who reaches it could change the cluster: \
                 configure [tls], listen on 127.0.0.1, or set raft.insecure_plaintext = true",
                settings.listen
            );
            return Err(ConfigError::new("raft.listen", problem).into());
        }
        if plaintext_exposed {
            tracing::warn!(
                target: "tessera::audit",
                listen = %settings.listen,
                "the control plane listens in plaintext on a non-loopback address (raft.insecure_plaintext): \
                 anyone who reaches it can change the cluster"
            );
        }
        let storage = |path: PathBuf| move |source| ConsensusError::Storage { path, source };
        std::fs::create_dir_all(&settings.data_dir).map_err(storage(settings.data_dir.clone()))?;
        let log_path = settings.data_dir.join("raft-log.redb");
        let log = LogStore::open(&log_path).map_err(storage(log_path))?;
        let state_path = settings.data_dir.join("raft-state.redb");
        let sm = StateMachine::open(&state_path, &settings.data_dir.join("snapshots")).map_err(storage(state_path))?;
        let view = sm.view();

        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ConsensusError::Bind { addr: settings.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ConsensusError::Bind { addr: settings.listen, source })?;

        let partition = Partition::default();
        let refusals = Arc::new(Refusals::default());
        let server_tls = match &tls {
            Some(material) => Some(ServerTls {
                config: material
                    .server_config(ClientAuth::Required)
                    .map_err(|e| ConsensusError::Tls(e.within("tls")))?,
                endpoint: "raft",
                refusals: refusals.clone(),
            }),
            None => None,
        };
        let client_tls = ClientTls::from_material(tls.as_ref());
        let network = Network::new(settings.node_id, partition.clone(), client_tls.clone());
        let raft = Raft::new(settings.node_id, config, network, log, sm).await.map_err(ConsensusError::Raft)?;

        let shared = Shared {
            raft: raft.clone(),
            view: view.clone(),
            partition,
            me: settings.node_id,
            fault_injection: settings.fault_injection,
            write_timeout: Duration::from_millis(settings.write_timeout_ms),
            client_tls,
            tls_required: tls.is_some(),
            refusals: refusals.clone(),
            max_snapshot_bytes: settings.max_snapshot_bytes,
            site: settings.site.clone(),
            voter_down_after: Duration::from_millis(settings.voter_down_after_ms),
            rebalance_now: Arc::new(tokio::sync::Notify::new()),
        };
        let voter_keeper = tokio::spawn(keep_voters_balanced(shared.clone()));
        let transport = RaftTransportServer::new(TransportService(shared.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let admin = ClusterAdminServer::new(AdminService(shared.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder().add_service(transport).add_service(admin);
        let server = tokio::spawn(tessera_tls::serve(router, listener, server_tls, async {
            let _ = stopped.await;
        }));
        tracing::info!(node = settings.node_id, site = %settings.site, %addr, tls = tls.is_some(), "control-plane node started");
        Ok(Self {
            raft,
            view,
            addr,
            advertised: settings.advertised(addr),
            stop: Some(stop),
            server,
            voter_keeper,
            refusals,
            shared,
            plaintext_exposed,
        })
    }

    /// The openraft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// A handle that records what people do about alerts (see [`AlertDesk`]).
    pub fn alert_desk(&self) -> AlertDesk {
        AlertDesk(self.shared.clone())
    }

    /// The applied registry.
    pub fn registry(&self) -> RegistryView {
        self.view.clone()
    }

    /// True if the node serves in plaintext on a non-loopback address (allowed only by
    /// `insecure_plaintext`): anyone who reaches it can change the cluster.
    pub fn plaintext_exposed(&self) -> bool {
        self.plaintext_exposed
    }

    /// The address the endpoint is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address other nodes should use for this one.
    pub fn advertised(&self) -> &str {
        &self.advertised
    }

    /// What the endpoint refused: failed TLS handshakes, and requests whose certificate did
    /// not fit their claim (a message signed by another node's id).
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// Initialises a new cluster with `members` (`(id, site, address)`, this node among them)
    /// unless this node has been initialised before (then it yields `false`): a deployment's
    /// first start, without an operator's `cluster init`. Only one member (by convention the
    /// lowest id) should do it; the others join as its first leader replicates to them. A
    /// bounded set of them votes (see [`crate::voters`]); the rest join as learners. The
    /// returned task then records each member's registration, retrying while no quorum is up
    /// yet (the other members may still be starting), for up to `patience`.
    pub fn bootstrap(
        &self,
        members: &[(NodeId, String, String)],
        patience: Duration,
    ) -> impl std::future::Future<Output = Result<bool, ConsensusError>> + Send + 'static {
        let shared = self.shared.clone();
        let members: std::collections::BTreeMap<NodeId, Member> =
            members.iter().map(|(id, site, addr)| (*id, Member { site: site.clone(), addr: addr.clone() })).collect();
        async move {
            if shared.raft.is_initialized().await.map_err(|e| ConsensusError::Bootstrap(e.into()))? {
                return Ok(false);
            }
            let actor = format!("bootstrap:node-{}", shared.me);
            let registrations =
                shared.registrations(&actor, &members).map_err(|e| ConsensusError::Bootstrap(e.into()))?;
            let deadline = tokio::time::Instant::now() + patience;
            shared
                .initialize_bounded(&members, deadline.into_std())
                .await
                .map_err(|e| ConsensusError::Bootstrap(e.into()))?;
            for r in registrations {
                while let Err(e) = shared.write(r.clone(), &shared.itself(), false).await {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ConsensusError::RecordingMembers(e.into()));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Ok(true)
        }
    }

    /// The term, the leader and the applied index as this node sees them.
    pub fn status(&self) -> RaftStatus {
        RaftStatus::of(&self.raft)
    }

    /// Stops serving and shuts Raft down.
    pub async fn shutdown(mut self) -> Result<(), ConsensusError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.voter_keeper.abort();
        let served = (&mut self.server).await;
        self.raft.shutdown().await.map_err(ConsensusError::Shutdown)?;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ConsensusError::Endpoint(e)),
            Err(e) => Err(ConsensusError::EndpointTask(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_setting_is_named_as_data_and_in_the_message() {
        let settings = RaftSettings {
            heartbeat_ms: 0,
            ..RaftSettings::new(1, "site-a", "127.0.0.1:0".parse().unwrap(), "/nonexistent")
        };
        let err = settings.raft_config().unwrap_err();
        assert_eq!(err.to_string(), "config: raft.heartbeat: must be positive");
        assert!(matches!(&err, ConsensusError::Config(e) if e.field == "raft.heartbeat"), "{err:?}");
        let settings = RaftSettings {
            election_timeout_max_ms: 300,
            ..RaftSettings::new(1, "site-a", "127.0.0.1:0".parse().unwrap(), "/nonexistent")
        };
        assert_eq!(
            settings.raft_config().unwrap_err().to_string(),
            "config: raft.election_timeout_max: 300 ms must exceed raft.election_timeout_min (300 ms)"
        );
        assert!(RaftSettings::new(1, "site-a", "127.0.0.1:0".parse().unwrap(), "/nonexistent").raft_config().is_ok());
    }
}
