//! The fleet at scale, simulated in one process (issue 27): many sites, each a Flight SQL
//! endpoint with a catalog of its own holding its motors' window aggregates, federated; a
//! control plane of many members over those sites (a bounded voter set, the rest learners);
//! and WAN latency on every link between sites.
//!
//! - [`DelayLink`]: a TCP relay that delivers every byte a fixed time after it was sent, in
//!   both directions (a WAN link's one-way latency without its loss). Cross-site traffic goes
//!   through one: fleet fragments to a site, Raft messages to a member. A caller at a site
//!   talks to it directly.
//! - [`SqlFleet`]: `sites` endpoints on loopback, each serving `motor_windows` (the last
//!   `windows` ten-minute windows of each of its `motors`) and federating with the others
//!   through their links.
//! - [`RaftFleet`]: `members` control-plane nodes over `sites` sites, initialised as one
//!   cluster (5 voters on 5 sites, the rest learners), each reached by the others through its
//!   link.
//!
//! Everything shares this process's cores: the figures are the protocol's (round trips and
//! the coordinator's merge), not a deployment's compute.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Float64Builder, MapBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray,
};
use tessera_sql::{
    Authenticator, Catalog, ConfigUsers, Federation, FlightSqlEndpoint, LogAudit, Peer, Role, ServedTable, TableKind,
    UserConfig,
};
use tessera_stream::tables::BoundedTable;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A TCP relay on loopback to `target` that delivers every byte `one_way` after it was sent,
/// in both directions. It runs until the runtime it was started on stops.
pub struct DelayLink {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
}

impl DelayLink {
    /// Starts a link to `target` on `runtime`.
    pub fn start(runtime: &tokio::runtime::Handle, target: SocketAddr, one_way: Duration) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a link")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::spawn(delayed(in_read, out_write, one_way));
                    tokio::spawn(delayed(out_read, in_write, one_way));
                });
            }
        });
        Ok(Self { addr })
    }
}

/// Copies `from` to `to`, each chunk written `one_way` after it was read (order kept).
async fn delayed(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, one_way: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || tx.send((tokio::time::Instant::now() + one_way, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The user a fleet query is asked as, and its password.
pub const ANALYST: (&str, &str) = ("analyst", "fleet-sim-password");

/// The fleet aggregate: per query, the windows, their mean, lowest and highest score, over
/// every site. (Not `count(DISTINCT motor_id)`: a DISTINCT is not computed at the sites, so
/// every site would send its motor ids; see docs/SCALING.md.)
pub const FLEET_AGGREGATE: &str = "SELECT query, count(*) AS windows, avg(score) AS score, min(score) AS lowest, max(score) AS highest \
     FROM fleet.motor_windows GROUP BY query";

/// Sites serving window aggregates, federated through [`DelayLink`]s.
pub struct SqlFleet {
    /// Each site's endpoint, direct (a caller at the site).
    pub addrs: Vec<String>,
    /// Window rows each site holds.
    pub rows_per_site: usize,
}

/// Ten-minute windows of `motors` motors at `site`, the newest `windows` of each, ending at
/// `end_ms`: query `vib`, a score, and 600 readings each (enough for the default group
/// policy, so that an analyst sees the scores).
pub fn site_windows(site: usize, motors: usize, windows: usize, end_ms: i64) -> RecordBatch {
    let rows = motors * windows;
    let (mut motor, mut start, mut end, mut score) =
        (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
    let mut features = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new());
    for m in 0..motors {
        let id = format!("S{site:03}-M{m:05}");
        for w in 0..windows {
            let window_end = end_ms - (w as i64) * 600_000;
            motor.push(id.clone());
            start.push(window_end - 600_000);
            end.push(window_end);
            score.push(((site * 7 + m * 13 + w) % 100) as f64 / 25.0);
            features.keys().append_value("readings");
            features.values().append_value(600.0);
            features.append(true).expect("a map entry");
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["vib"; rows])),
        Arc::new(StringArray::from(motor)),
        Arc::new(TimestampMillisecondArray::from(start).with_timezone("UTC")),
        Arc::new(TimestampMillisecondArray::from(end).with_timezone("UTC")),
        Arc::new(Float64Array::from(score)),
        Arc::new(features.finish()),
    ];
    RecordBatch::try_new(tessera_stream::alerts::motor_windows_schema(), columns).expect("a motor_windows batch")
}

impl SqlFleet {
    /// Starts `sites` endpoints on `runtime`, each holding `motors` motors' newest `windows`
    /// windows, every cross-site fragment through a link of `one_way` latency; each site
    /// gives a fragment `fragment_timeout`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        sites: usize,
        motors: usize,
        windows: usize,
        one_way: Duration,
        fragment_timeout: Duration,
    ) -> Result<Self> {
        let token = "fleet-sim-federation-token".to_string();
        let hash = tessera_sql::auth::hash_password(ANALYST.1)?;
        let users =
            vec![UserConfig { name: ANALYST.0.into(), password_hash: hash, role: Role::FleetAnalyst, site: None }];
        let listeners: Vec<std::net::TcpListener> =
            (0..sites).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
        let direct: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
        let linked: Vec<String> = direct
            .iter()
            .map(|a| DelayLink::start(runtime.handle(), *a, one_way).map(|l| l.addr.to_string()))
            .collect::<Result<_>>()?;
        let end_ms = tessera_core::now_ms().div_euclid(600_000) * 600_000;
        let mut rows_per_site = 0;
        for (s, listener) in listeners.into_iter().enumerate() {
            let table = BoundedTable::new(tessera_stream::alerts::motor_windows_schema(), usize::MAX);
            let batch = site_windows(s, motors, windows, end_ms);
            rows_per_site = batch.num_rows();
            table.append(batch);
            let peers = (0..sites)
                .filter(|p| *p != s)
                .map(|p| Peer { site: format!("site-{p:03}"), addr: linked[p].clone(), fallbacks: vec![] })
                .collect();
            let served = vec![ServedTable { name: "motor_windows".into(), provider: table, kind: TableKind::Derived }];
            let catalog = Catalog::new(format!("site-{s:03}"), served).with_federation(Federation {
                peers,
                token: token.clone(),
                timeout: fragment_timeout,
                tls: tessera_tls::ClientTls::Plain,
            });
            let auth = Authenticator::new(Box::new(ConfigUsers::new(&users, &[])?), Duration::from_secs(3600))
                .with_federation_token(&token);
            let endpoint = FlightSqlEndpoint::new(
                Arc::new(catalog),
                Arc::new(auth),
                Arc::new(LogAudit),
                runtime.handle().clone(),
            )?;
            listener.set_nonblocking(true)?;
            runtime.spawn(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let _ = tonic::transport::Server::builder()
                    .add_service(endpoint.into_service())
                    .serve_with_incoming(incoming)
                    .await;
            });
        }
        Ok(Self { addrs: direct.iter().map(ToString::to_string).collect(), rows_per_site })
    }

    /// A client of site `site`'s endpoint, signed in as the analyst.
    pub async fn client(
        &self,
        site: usize,
    ) -> Result<arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.addrs[site]))?.connect().await?;
        let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
        client.handshake(ANALYST.0, ANALYST.1).await?;
        Ok(client)
    }
}

/// One answer of the fleet aggregate: its rows, the sites its schema says answered, and how
/// long it took from the request to the last row.
pub struct FleetAnswer {
    /// The result.
    pub batches: Vec<RecordBatch>,
    /// `tessera.sites.answered`.
    pub answered: Vec<String>,
    /// Request to last row.
    pub took: Duration,
}

/// Runs `sql` through `client`.
pub async fn fleet_query(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<FleetAnswer> {
    use futures::TryStreamExt as _;
    let started = Instant::now();
    let info = client.execute(sql.to_string(), None).await?;
    let mut batches = Vec::new();
    let mut answered = Vec::new();
    for endpoint in info.endpoint {
        let mut stream = client.do_get(endpoint.ticket.context("a ticket")?).await?;
        while let Some(batch) = stream.try_next().await? {
            batches.push(batch);
        }
        if let Some(sites) =
            stream.schema().and_then(|s| s.metadata().get(tessera_sql::fanout::SITES_ANSWERED_METADATA_KEY).cloned())
        {
            answered = sites.split(", ").map(str::to_string).collect();
        }
    }
    Ok(FleetAnswer { batches, answered, took: started.elapsed() })
}

/// A control plane of many members over many sites, each reached through a [`DelayLink`].
pub struct RaftFleet {
    /// The running members.
    pub nodes: Vec<tessera_consensus::ConsensusNode>,
    /// Kept until the fleet is dropped: the members' data.
    _dirs: tempfile::TempDir,
}

/// Raft timing for links of `one_way` latency: elections well above a round trip.
pub fn raft_timing(settings: &mut tessera_consensus::RaftSettings, one_way: Duration) {
    let rtt = 2 * one_way.as_millis() as u64;
    settings.heartbeat_ms = 100 + rtt;
    settings.election_timeout_min_ms = 500 + 4 * rtt;
    settings.election_timeout_max_ms = settings.election_timeout_min_ms + 300;
    settings.write_timeout_ms = 10_000;
    settings.voter_down_after_ms = (settings.election_timeout_max_ms * 4).max(5_000);
}

impl RaftFleet {
    /// Starts `members` members over `sites` sites (member i at site i mod `sites`) on
    /// `runtime`, each reached by the others through a link of `one_way` latency, and
    /// initialises them as one cluster through member 0.
    pub fn start(runtime: &tokio::runtime::Runtime, members: usize, sites: usize, one_way: Duration) -> Result<Self> {
        Self::start_in(&std::env::temp_dir(), runtime, members, sites, one_way)
    }

    /// [`RaftFleet::start`] with the members' data in a new directory under `parent`.
    pub fn start_in(
        parent: &std::path::Path,
        runtime: &tokio::runtime::Runtime,
        members: usize,
        sites: usize,
        one_way: Duration,
    ) -> Result<Self> {
        let dirs = tempfile::tempdir_in(parent)?;
        let mut nodes = Vec::with_capacity(members);
        let mut specs = Vec::with_capacity(members);
        for i in 0..members {
            let id = i as u64 + 1;
            let site = format!("site-{:03}", i % sites);
            let mut settings = tessera_consensus::RaftSettings::new(
                id,
                &site,
                "127.0.0.1:0".parse().expect("an address"),
                dirs.path().join(format!("member-{id}")),
            );
            raft_timing(&mut settings, one_way);
            let node = runtime.block_on(tessera_consensus::ConsensusNode::start(settings))?;
            let link = DelayLink::start(runtime.handle(), node.addr(), one_way)?;
            specs.push(tessera_proto::raft::NodeSpec { id, site, addr: link.addr.to_string() });
            nodes.push(node);
        }
        let first = nodes[0].addr();
        runtime.block_on(async {
            let mut admin = admin_client(first).await?;
            admin.init(tessera_proto::raft::InitRequest { nodes: specs, actor: "fleet-sim".into() }).await?;
            anyhow::Ok(())
        })?;
        Ok(Self { nodes, _dirs: dirs })
    }

    /// The leader's index in `nodes`, once a member says it leads (up to `within`).
    pub fn leader(&self, within: Duration) -> Result<usize> {
        let until = Instant::now() + within;
        loop {
            if let Some(i) = self.nodes.iter().position(|n| n.status().is_leader) {
                return Ok(i);
            }
            anyhow::ensure!(Instant::now() < until, "no leader within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where member `i` keeps its log, state machine and snapshots.
    pub fn data_dir(&self, i: usize) -> std::path::PathBuf {
        self._dirs.path().join(format!("member-{}", i + 1))
    }

    /// Shuts every member down.
    pub fn shutdown(self, runtime: &tokio::runtime::Runtime) -> Result<()> {
        for node in self.nodes {
            runtime.block_on(node.shutdown())?;
        }
        Ok(())
    }
}

/// An admin client of the member at `addr`.
pub async fn admin_client(
    addr: SocketAddr,
) -> Result<tessera_proto::raft::cluster_admin_client::ClusterAdminClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .timeout(Duration::from_secs(30))
        .connect()
        .await?;
    Ok(tessera_proto::raft::cluster_admin_client::ClusterAdminClient::new(channel))
}

/// One control-plane write (a query registration) through the member at `addr`: how long
/// until it was committed and applied there.
pub async fn timed_write(
    admin: &mut tessera_proto::raft::cluster_admin_client::ClusterAdminClient<tonic::transport::Channel>,
    name: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let reply = admin
        .register_query(tessera_proto::raft::RegisterQueryRequest {
            name: name.into(),
            sql: format!("SELECT '{name}'"),
            actor: "fleet-sim".into(),
        })
        .await?
        .into_inner();
    anyhow::ensure!(reply.rejected.is_empty(), "{name}: {}", reply.rejected);
    Ok(started.elapsed())
}
