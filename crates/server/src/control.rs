//! The control plane on the command line: `tessera control-node` runs a Raft node;
//! `tessera cluster …` and `tessera query …` speak to any node's admin API.
//!
//! Any node answers: writes and linearizable reads are forwarded to the leader by the node, so
//! the CLI needs only one reachable address (`--at`, or `TESSERA_ADMIN`).
//!
//! An ingest node with `[control] admin` runs the registered queries: read at start
//! ([`registered_queries`], [`add_registered_queries`]) and then kept in step by a
//! [`QueryWatcher`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand};
use tessera_consensus::{ConsensusNode, RaftSettings};
use tessera_proto::raft as pb;
use tessera_proto::raft::cluster_admin_client::ClusterAdminClient;
use tessera_tls::{ClientTls, TlsFiles, TlsMaterial};
use tonic::transport::Channel;

use crate::config::ControlConfig;
use crate::detect::QueryChange;

/// The control-plane subcommands.
#[derive(Subcommand)]
#[allow(missing_docs)] // variant fields are documented by their flags' help
pub enum ControlCommand {
    /// Run a control-plane (Raft) node until Ctrl-C; it joins when `cluster init` or
    /// `cluster add-node` names it.
    ControlNode(ControlNodeArgs),
    /// Cluster membership, status, sites, motors, policies and the audit log.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Continuous queries: registered once, run by every site on its own motors.
    Query {
        #[command(subcommand)]
        command: QueryCommand,
    },
}

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
    /// mTLS: the node's certificate must be for `--id`.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS files for a node or a client (`--tls-ca`, `--tls-cert`, `--tls-key`): all three, or
/// none for a cluster without TLS.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// The cluster's CA bundle (PEM) every peer certificate must chain to.
    #[arg(long = "tls-ca", env = "TESSERA_TLS_CA")]
    pub ca: Option<PathBuf>,
    /// This side's certificate (from `tessera cert node|operator`).
    #[arg(long = "tls-cert", env = "TESSERA_TLS_CERT")]
    pub cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long = "tls-key", env = "TESSERA_TLS_KEY")]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, if TLS is asked for; naming the missing flag if only some are given.
    pub fn files(&self) -> Result<Option<TlsFiles>> {
        match (&self.ca, &self.cert, &self.key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })),
            _ => {
                let missing: Vec<&str> = [("--tls-ca", self.ca.is_none()), ("--tls-cert", self.cert.is_none()), ("--tls-key", self.key.is_none())]
                    .into_iter()
                    .filter_map(|(flag, missing)| missing.then_some(flag))
                    .collect();
                bail!("TLS needs --tls-ca, --tls-cert and --tls-key together; missing {}", missing.join(", "))
            }
        }
    }

    /// The loaded material, if TLS is asked for.
    pub fn material(&self) -> Result<Option<Arc<TlsMaterial>>> {
        Ok(match self.files()? {
            Some(files) => Some(Arc::new(TlsMaterial::load(&files).map_err(|e| e.within("tls"))?)),
            None => None,
        })
    }

    /// How a client connects.
    pub fn client(&self) -> Result<ClientTls> {
        Ok(ClientTls::from_material(self.material()?.as_ref()))
    }
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
            ..RaftSettings::new(self.id, self.site.clone(), self.listen, self.data_dir.clone())
        }
    }
}

/// Which node to ask, and who is asking.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Any node's gRPC address.
    #[arg(long, env = "TESSERA_ADMIN", default_value = "127.0.0.1:7070")]
    pub at: String,
    /// Who is asking, for the audit log (default: $USER).
    #[arg(long, env = "TESSERA_ACTOR")]
    pub actor: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// mTLS (for a cluster with TLS): an operator's or node's certificate.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl AdminArgs {
    fn actor(&self) -> String {
        self.actor.clone().or_else(|| std::env::var("USER").ok()).filter(|a| !a.is_empty()).unwrap_or_else(|| "cli".into())
    }

    async fn client(&self) -> Result<ClusterAdminClient<Channel>> {
        Ok(ClusterAdminClient::new(grpc_channel(&self.at, &self.tls.client()?, self.timeout, "node").await?))
    }
}

/// A gRPC channel to `at` (host:port), over `tls`, whose calls time out after `timeout`;
/// errors name `what` is there (the CLI's `--at`).
pub(crate) async fn grpc_channel(at: &str, tls: &ClientTls, timeout: Duration, what: &str) -> Result<Channel> {
    tls.endpoint(at, Duration::from_secs(3))
        .with_context(|| format!("--at {at}: not a host:port"))?
        .timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("cannot reach the {what} at {at}"))
}

/// `tessera cluster …`
#[derive(Subcommand, Debug)]
#[allow(missing_docs)] // variant fields are documented by their flags' help
pub enum ClusterCommand {
    /// Make the given nodes the cluster's first voters (run once, against one of them).
    Init {
        #[command(flatten)]
        admin: AdminArgs,
        /// A voter, as ID=SITE@HOST:PORT (repeat; each site should run at least one).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
    /// Add a node: first as a learner, then (once caught up) as a voter.
    AddNode {
        #[command(flatten)]
        admin: AdminArgs,
        /// The node, as ID=SITE@HOST:PORT.
        node: String,
        /// Keep it a learner (a non-voting replica).
        #[arg(long)]
        learner_only: bool,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        #[command(flatten)]
        admin: AdminArgs,
        /// Its Raft id.
        id: u64,
    },
    /// The node's view of the cluster.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Sites with their motor counts and nodes.
    Sites {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Add (or rename) a site.
    AddSite {
        #[command(flatten)]
        admin: AdminArgs,
        /// Its id.
        site: String,
        /// Its name.
        name: String,
    },
    /// Make a site the owner of motors.
    AssignMotors {
        #[command(flatten)]
        admin: AdminArgs,
        /// The site.
        site: String,
        /// Motor ids.
        #[arg(required = true)]
        motors: Vec<String>,
    },
    /// Set a data grade's rule for one stage.
    SetPolicy {
        #[command(flatten)]
        admin: AdminArgs,
        /// general | important | core
        grade: String,
        /// generation | transmission | storage | use | migration | destruction
        stage: String,
        /// The rule.
        rule: String,
    },
    /// Grade a stream's default or one of its columns cluster-wide (nodes raise their config's
    /// grades to it, never lower them).
    SetGrade {
        #[command(flatten)]
        admin: AdminArgs,
        /// The stream (telemetry, motor_windows, alerts, late_events, ...).
        stream: String,
        /// general | important | core
        grade: String,
        /// The column; without it, the stream's default.
        #[arg(long)]
        column: Option<String>,
    },
    /// Ask for an export bundle's key to be released to a target site once `k` of its
    /// custodian sites approve.
    RequestRelease {
        #[command(flatten)]
        admin: AdminArgs,
        /// The export's id.
        bundle: String,
        /// The site whose data it holds.
        #[arg(long)]
        source: String,
        /// The site that will import it.
        #[arg(long)]
        target: String,
        /// Approvals needed (at least 2).
        #[arg(long)]
        k: u32,
        /// A site holding a share (repeat).
        #[arg(long = "custodian", required = true)]
        custodians: Vec<String>,
    },
    /// Approve a release for a custodian site (over mTLS: with a node certificate of that site).
    ApproveRelease {
        #[command(flatten)]
        admin: AdminArgs,
        /// The export's id.
        bundle: String,
        /// The approving site.
        #[arg(long)]
        site: String,
    },
    /// Release requests and their approvals.
    Releases {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The grades set cluster-wide.
    Grades {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The audit log: who did what, when.
    Audit {
        #[command(flatten)]
        admin: AdminArgs,
        /// From this log index on.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Fault injection (nodes started with --fault-injection only): cut the node off from these
    /// nodes' Raft traffic; none heals it.
    Partition {
        #[command(flatten)]
        admin: AdminArgs,
        /// Node ids to cut off from.
        blocked: Vec<u64>,
    },
}

/// `tessera query …`
#[derive(Subcommand, Debug)]
#[allow(missing_docs)] // variant fields are documented by their flags' help
pub enum QueryCommand {
    /// Register (or replace) a continuous query cluster-wide: every node configured with
    /// `[control] admin` runs it (read at the node's start).
    Register {
        #[command(flatten)]
        admin: AdminArgs,
        /// Its name.
        name: String,
        /// Its SQL.
        sql: String,
    },
    /// The registered queries.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Drop a query.
    Drop {
        #[command(flatten)]
        admin: AdminArgs,
        /// Its name.
        name: String,
    },
}

/// The continuous queries registered cluster-wide, as `(name, sql)`, read linearizably from the
/// control-plane node at `admin`.
pub fn registered_queries(admin: &str, tls: &ClientTls, timeout: Duration) -> Result<Vec<(String, String)>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async { list_queries(&mut admin_client(admin, tls, timeout).await?, admin).await })
}

pub(crate) async fn admin_client(admin: &str, tls: &ClientTls, timeout: Duration) -> Result<ClusterAdminClient<Channel>> {
    Ok(ClusterAdminClient::new(grpc_channel(admin, tls, timeout, "node").await?))
}

async fn list_queries(client: &mut ClusterAdminClient<Channel>, admin: &str) -> Result<Vec<(String, String)>> {
    let reply = client.list_queries(pb::ListQueriesRequest {}).await.map_err(|s| status_error(admin, s))?;
    Ok(reply.into_inner().queries.into_iter().map(|q| (q.name, q.sql)).collect())
}

/// Adds the cluster's registered queries to `engine`, each on windows of its own (so that it
/// can be dropped later without touching the others, see
/// [`tessera_stream::StreamEngine::register_standalone`]). A query the node already runs under
/// the same name wins: a site may override a cluster-wide rule. A registered query that does
/// not parse or plan here is not run; it is returned with the reason, so that one bad
/// registration cannot stop every node of the cluster.
pub fn add_registered_queries(engine: &mut tessera_stream::StreamEngine, registered: &[(String, String)]) -> Result<Vec<(String, String)>> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let mut refused = Vec::new();
    for (name, sql) in registered {
        if engine.queries().any(|q| &q.name == name) {
            continue;
        }
        if let Err(e) = check_query(name, sql) {
            refused.push((name.clone(), e.to_string()));
            continue;
        }
        if let Err(e) = runtime.block_on(engine.register_standalone(sql)) {
            refused.push((name.clone(), e.to_string()));
        }
    }
    Ok(refused)
}

/// What turns the cluster-wide queries a node runs, `running` (name → statement), into
/// `registered`, leaving out the names in `local` (the node's own queries win): drops first,
/// then registrations; a changed statement is a drop and a registration.
pub fn query_changes(running: &BTreeMap<String, String>, registered: &[(String, String)], local: &BTreeSet<String>) -> Vec<QueryChange> {
    let wanted: BTreeMap<&str, &str> = registered.iter().filter(|(n, _)| !local.contains(n)).map(|(n, s)| (n.as_str(), s.as_str())).collect();
    let drops = running
        .iter()
        .filter(|(name, sql)| wanted.get(name.as_str()) != Some(&sql.as_str()))
        .map(|(name, _)| QueryChange::Drop { name: name.clone() });
    let registers = wanted
        .iter()
        .filter(|(name, sql)| running.get(**name).map(String::as_str) != Some(**sql))
        .map(|(name, sql)| QueryChange::Register { name: name.to_string(), sql: sql.to_string() });
    drops.chain(registers).collect()
}

/// The registry's sites and motors as a node last read them (for the `sites` and `motors`
/// SQL tables), kept current by the [`QueryWatcher`].
#[derive(Debug, Clone, Default)]
pub struct RegistryRows(Arc<std::sync::Mutex<(Vec<pb::Site>, Vec<pb::MotorAssignment>)>>);

impl RegistryRows {
    /// The sites and the motor → site assignments.
    pub fn get(&self) -> (Vec<pb::Site>, Vec<pb::MotorAssignment>) {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn set(&self, sites: Vec<pb::Site>, motors: Vec<pb::MotorAssignment>) {
        if let Ok(mut r) = self.0.lock() {
            *r = (sites, motors);
        }
    }
}

/// Keeps a running node's cluster-wide queries in step with the registry: every `poll` it
/// reads the registered queries (linearizably) and sends the detection stage what changed
/// (see [`query_changes`]). A registration whose statement does not create the query it is
/// registered under is logged and skipped. While the control plane cannot be read, the node
/// goes on with the queries it has, and says so once.
pub struct QueryWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QueryWatcher {
    /// Starts watching the control plane at `admin` (over `tls`). `running` is what the node runs of
    /// `registered` already; `local` the names of its own queries.
    /// It also keeps `registry` (sites and motors) current, and `grades` raised to the
    /// cluster's grade policy.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        control: &ControlConfig,
        admin: &str,
        tls: ClientTls,
        local: BTreeSet<String>,
        running: BTreeMap<String, String>,
        changes: Sender<QueryChange>,
        registry: RegistryRows,
        grades: tessera_core::LiveGrades,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let watch = Watch { admin: admin.to_string(), tls, timeout: control.timeout, poll: control.poll, local, running, changes, registry, grades, stop: stop.clone() };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("tessera-query-watch".into()).spawn(move || runtime.block_on(watch.run()))?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for QueryWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Watch {
    admin: String,
    tls: ClientTls,
    timeout: Duration,
    poll: Duration,
    local: BTreeSet<String>,
    running: BTreeMap<String, String>,
    changes: Sender<QueryChange>,
    registry: RegistryRows,
    grades: tessera_core::LiveGrades,
    stop: Arc<AtomicBool>,
}

impl Watch {
    async fn run(mut self) {
        let mut client = None;
        let mut unreachable = false;
        let mut first = true;
        loop {
            // The first read at once (the registry tables start filled), then every poll.
            let next = tokio::time::Instant::now() + if first { Duration::ZERO } else { self.poll };
            first = false;
            while tokio::time::Instant::now() < next {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50).min(self.poll)).await;
            }
            let read = async {
                if client.is_none() {
                    client = Some(admin_client(&self.admin, &self.tls, self.timeout).await?);
                }
                let c = client.as_mut().expect("connected");
                let queries = list_queries(c, &self.admin).await?;
                let sites = c.list_sites(pb::ListSitesRequest {}).await.map_err(|s| status_error(&self.admin, s))?.into_inner().sites;
                let motors = c.list_motors(pb::ListMotorsRequest { site: String::new() }).await.map_err(|s| status_error(&self.admin, s))?.into_inner().motors;
                self.registry.set(sites, motors);
                let policy = c.list_grades(pb::ListGradesRequest {}).await.map_err(|s| status_error(&self.admin, s))?.into_inner().grades;
                if self.grades.apply_policy(&grade_policy(&policy)?) {
                    tracing::info!(target: "tessera::audit", admin = %self.admin, grades = policy.len(), "the cluster's grade policy is applied");
                }
                Ok::<_, anyhow::Error>(queries)
            };
            let registered = match tokio::time::timeout(self.timeout, read).await.unwrap_or_else(|_| Err(anyhow!("no answer in {:?}", self.timeout))) {
                Ok(registered) => registered,
                Err(e) => {
                    client = None;
                    if !unreachable {
                        tracing::warn!(admin = %self.admin, error = %e, "cannot read the cluster's queries; running the ones we have");
                        unreachable = true;
                    }
                    continue;
                }
            };
            if unreachable {
                tracing::info!(admin = %self.admin, "the cluster's queries can be read again");
                unreachable = false;
            }
            for change in query_changes(&self.running, &registered, &self.local) {
                match &change {
                    QueryChange::Drop { name } => {
                        self.running.remove(name);
                    }
                    QueryChange::Register { name, sql } => {
                        self.running.insert(name.clone(), sql.clone());
                        if let Err(e) = check_query(name, sql) {
                            tracing::error!(query = %name, error = %e, "a query registered cluster-wide is not run on this node");
                            continue;
                        }
                    }
                }
                if self.changes.send(change).is_err() {
                    return; // the detection stage has stopped
                }
            }
        }
    }
}

/// Checks that `sql` is a `CREATE CONTINUOUS QUERY` named `name`, before it is registered.
pub fn check_query(name: &str, sql: &str) -> Result<()> {
    let def = tessera_stream::grammar::parse(sql).map_err(|e| anyhow!("query {name}: {e}"))?;
    anyhow::ensure!(def.name == name, "query {name}: the statement creates '{}'; register it under that name", def.name);
    Ok(())
}

/// The cluster's grade settings as a map of just what they name.
fn grade_policy(entries: &[pb::GradeEntry]) -> Result<tessera_core::GradeMap> {
    let mut policy = tessera_core::GradeMap::empty();
    for g in entries {
        let grade = g.grade.parse().map_err(|e| anyhow!("the cluster's grade of {}.{}: {e}", g.stream, g.column))?;
        policy.set(&g.stream, Some(g.column.as_str()).filter(|c| !c.is_empty()), grade);
    }
    Ok(policy)
}

/// Parses `ID=SITE@HOST:PORT`.
pub fn parse_node_spec(s: &str) -> Result<pb::NodeSpec> {
    let err = || anyhow!("node {s:?}: expected ID=SITE@HOST:PORT, e.g. 1=site-a@10.0.0.5:7070");
    let (id, rest) = s.split_once('=').ok_or_else(err)?;
    let (site, addr) = rest.split_once('@').ok_or_else(err)?;
    let id = id.trim().parse().map_err(|_| err())?;
    if site.is_empty() || !addr.contains(':') {
        return Err(err());
    }
    Ok(pb::NodeSpec { id, site: site.into(), addr: addr.into() })
}

pub(crate) fn status_error(at: &str, s: tonic::Status) -> anyhow::Error {
    anyhow!("node at {at}: {}", s.message())
}

fn written(what: &str, reply: pb::WriteResponse) -> Result<()> {
    if reply.rejected.is_empty() {
        println!("{what}: committed at log index {}", reply.log_index);
        Ok(())
    } else {
        bail!("{what}: refused by the registry (log index {}): {}", reply.log_index, reply.rejected)
    }
}

fn print_membership(m: &pb::MembershipResponse) {
    let list = |nodes: &[pb::NodeSpec]| {
        if nodes.is_empty() {
            "-".to_string()
        } else {
            nodes.iter().map(|n| format!("{} ({} {})", n.id, n.site, n.addr)).collect::<Vec<_>>().join(", ")
        }
    };
    println!("voters: {}\nlearners: {}\nmembership at log index {}", list(&m.voters), list(&m.learners), m.log_index);
}

/// Milliseconds since the epoch as an RFC 3339 UTC time.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// Runs a control-plane subcommand; `stop` ends `control-node`.
pub fn run(command: ControlCommand, stop: &AtomicBool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        match command {
            ControlCommand::ControlNode(args) => serve(args, stop).await,
            ControlCommand::Cluster { command } => cluster(command).await,
            ControlCommand::Query { command } => query(command).await,
        }
    })
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

async fn cluster(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Init { admin, nodes } => {
            let nodes = nodes.iter().map(|n| parse_node_spec(n)).collect::<Result<Vec<_>>>()?;
            let reply = admin.client().await?.init(pb::InitRequest { nodes, actor: admin.actor() }).await;
            print_membership(&reply.map_err(|s| status_error(&admin.at, s))?.into_inner());
        }
        ClusterCommand::AddNode { admin, node, learner_only } => {
            let node = Some(parse_node_spec(&node)?);
            let reply = admin.client().await?.add_node(pb::AddNodeRequest { node, learner_only, actor: admin.actor() }).await;
            print_membership(&reply.map_err(|s| status_error(&admin.at, s))?.into_inner());
        }
        ClusterCommand::RemoveNode { admin, id } => {
            let reply = admin.client().await?.remove_node(pb::RemoveNodeRequest { id, actor: admin.actor() }).await;
            print_membership(&reply.map_err(|s| status_error(&admin.at, s))?.into_inner());
        }
        ClusterCommand::Status { admin } => {
            let s = admin.client().await?.status(pb::StatusRequest {}).await.map_err(|s| status_error(&admin.at, s))?.into_inner();
            println!("node {}: {} in term {}", s.node_id, s.role, s.term);
            match s.leader_id {
                Some(id) => println!("leader: {id} at {}", s.leader_addr),
                None => println!("leader: none known"),
            }
            println!(
                "log: last {}, applied {}, snapshot {}, purged {}",
                opt(s.last_log_index),
                opt(s.applied_index),
                opt(s.snapshot_index),
                opt(s.purged_index)
            );
            print_membership(&pb::MembershipResponse { voters: s.voters, learners: s.learners, log_index: 0 });
            println!("registry: {} sites, {} motors, {} queries, {} audit records", s.sites, s.motors, s.queries, s.audit_records);
        }
        ClusterCommand::Sites { admin } => {
            let reply = admin.client().await?.list_sites(pb::ListSitesRequest {}).await.map_err(|s| status_error(&admin.at, s))?;
            for site in reply.into_inner().sites {
                println!("{} ({}): {} motors, nodes {:?}", site.site, site.name, site.motors, site.nodes);
            }
        }
        ClusterCommand::AddSite { admin, site, name } => {
            let req = pb::AddSiteRequest { site: site.clone(), name, actor: admin.actor() };
            let reply = admin.client().await?.add_site(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("site {site}"), reply.into_inner())?;
        }
        ClusterCommand::AssignMotors { admin, site, motors } => {
            let n = motors.len();
            let req = pb::AssignMotorsRequest { site: site.clone(), motors, actor: admin.actor() };
            let reply = admin.client().await?.assign_motors(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("{n} motors to {site}"), reply.into_inner())?;
        }
        ClusterCommand::SetPolicy { admin, grade, stage, rule } => {
            let req = pb::SetPolicyRequest { grade: grade.clone(), stage: stage.clone(), rule, actor: admin.actor() };
            let reply = admin.client().await?.set_policy(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("policy {grade}/{stage}"), reply.into_inner())?;
        }
        ClusterCommand::SetGrade { admin, stream, grade, column } => {
            let what = format!("grade of {stream}.{}", column.as_deref().unwrap_or("*"));
            let req = pb::SetGradeRequest { stream, column: column.unwrap_or_default(), grade, actor: admin.actor() };
            let reply = admin.client().await?.set_grade(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&what, reply.into_inner())?;
        }
        ClusterCommand::RequestRelease { admin, bundle, source, target, k, custodians } => {
            let what = format!("release request for bundle {bundle}");
            let req = pb::RequestReleaseRequest { bundle, source, target, k, custodians, actor: admin.actor() };
            let reply = admin.client().await?.request_release(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&what, reply.into_inner())?;
        }
        ClusterCommand::ApproveRelease { admin, bundle, site } => {
            let what = format!("approval of bundle {bundle} by {site}");
            let req = pb::ApproveReleaseRequest { bundle, site, actor: admin.actor() };
            let reply = admin.client().await?.approve_release(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&what, reply.into_inner())?;
        }
        ClusterCommand::Releases { admin } => {
            let reply = admin.client().await?.list_releases(pb::ListReleasesRequest {}).await.map_err(|s| status_error(&admin.at, s))?;
            for r in reply.into_inner().releases {
                let state = if r.released { "released" } else { "pending" };
                println!(
                    "{}  {} → {}  {state}: {} of k = {} approved ({}); custodians {}",
                    r.bundle,
                    r.source,
                    r.target,
                    r.approvals.len(),
                    r.k,
                    r.approvals.join(", "),
                    r.custodians.join(", ")
                );
            }
        }
        ClusterCommand::Grades { admin } => {
            let reply = admin.client().await?.list_grades(pb::ListGradesRequest {}).await.map_err(|s| status_error(&admin.at, s))?;
            for g in reply.into_inner().grades {
                let column = if g.column.is_empty() { "*" } else { g.column.as_str() };
                println!("{}.{column}  {}  (set by {} at {})", g.stream, g.grade, g.set_by, utc(g.set_at_ms));
            }
        }
        ClusterCommand::Audit { admin, from, limit } => {
            let req = pb::ListAuditRequest { from_index: from, limit };
            let reply = admin.client().await?.list_audit(req).await.map_err(|s| status_error(&admin.at, s))?;
            for e in reply.into_inner().entries {
                let outcome = if e.rejected.is_empty() { "done".to_string() } else { format!("refused: {}", e.rejected) };
                println!("{:>8}  {}  {:<12} {} — {outcome}", e.index, utc(e.at_ms), e.actor, e.action);
            }
        }
        ClusterCommand::Partition { admin, blocked } => {
            let req = pb::SetPartitionRequest { blocked: blocked.clone() };
            admin.client().await?.set_partition(req).await.map_err(|s| status_error(&admin.at, s))?;
            println!("node at {}: cut off from {blocked:?}", admin.at);
        }
    }
    Ok(())
}

async fn query(command: QueryCommand) -> Result<()> {
    match command {
        QueryCommand::Register { admin, name, sql } => {
            check_query(&name, &sql)?;
            let req = pb::RegisterQueryRequest { name: name.clone(), sql, actor: admin.actor() };
            let reply = admin.client().await?.register_query(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("query {name}"), reply.into_inner())?;
        }
        QueryCommand::List { admin } => {
            let reply = admin.client().await?.list_queries(pb::ListQueriesRequest {}).await.map_err(|s| status_error(&admin.at, s))?;
            let queries = reply.into_inner().queries;
            if queries.is_empty() {
                println!("no queries registered");
            }
            for q in queries {
                println!("{} (version {}, by {} at {}): {}", q.name, q.version, q.registered_by, utc(q.registered_at_ms), q.sql);
            }
        }
        QueryCommand::Drop { admin, name } => {
            let req = pb::DropQueryRequest { name: name.clone(), actor: admin.actor() };
            let reply = admin.client().await?.drop_query(req).await.map_err(|s| status_error(&admin.at, s))?;
            written(&format!("drop query {name}"), reply.into_inner())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs_parse_and_bad_ones_say_the_format() {
        let n = parse_node_spec("3=site-c@127.0.0.1:7003").unwrap();
        assert_eq!((n.id, n.site.as_str(), n.addr.as_str()), (3, "site-c", "127.0.0.1:7003"));
        for bad in ["3", "x=site@h:1", "3=site", "3=@h:1", "3=site@host"] {
            let err = parse_node_spec(bad).unwrap_err().to_string();
            assert!(err.contains("ID=SITE@HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn query_changes_drop_before_register_and_leave_local_queries_alone() {
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect::<Vec<_>>();
        let running: BTreeMap<String, String> = pairs(&[("kept", "K"), ("gone", "G"), ("edited", "E1")]).into_iter().collect();
        let registered = pairs(&[("kept", "K"), ("edited", "E2"), ("new", "N"), ("mine", "M")]);
        let local = BTreeSet::from(["mine".to_string()]);
        let drop = |n: &str| QueryChange::Drop { name: n.into() };
        let register = |n: &str, s: &str| QueryChange::Register { name: n.into(), sql: s.into() };
        assert_eq!(query_changes(&running, &registered, &local), [drop("edited"), drop("gone"), register("edited", "E2"), register("new", "N")]);
        let after: BTreeMap<String, String> = pairs(&[("kept", "K"), ("edited", "E2"), ("new", "N")]).into_iter().collect();
        assert!(query_changes(&after, &registered, &local).is_empty(), "nothing changes twice");
    }
}
