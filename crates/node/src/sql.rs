//! The node's SQL endpoint (Arrow Flight SQL, see `tessera_sql`): the `[sql]` config, the
//! tables a node serves, and the endpoint, served on the node's runtime until its shutdown signal.
//!
//! A node serves its engine's tables (`alerts`, `motor_windows`, `late_events`, and the raw
//! `telemetry` of its own site, readable only by that site's operators and admins) and
//! `continuous_queries` (what it runs now), `partitions` (which Kafka partitions it answers
//! for: with `site_nodes`, the site's other nodes, the tables whose rows belong to motors
//! span them all, see `tessera_sql::site`), with a control plane the registry's `sites` and
//! `motors`, and `query_audit` (every query asked of it, run or
//! refused; admins only).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use serde::{Deserialize, Serialize};
use tessera_core::{ConfigError, ensure};
use tessera_sql::fanout::{SiteAnswer, SiteFragment};
use tessera_sql::federation::SiteNodes;
use tessera_sql::{
    AuditSink, Authenticator, Catalog, ConfigUsers, Federation, FlightSqlEndpoint, GroupPolicy, LiveGroupPolicy,
    LogAudit, Peer, QueryAudit, QueryLimits, ServedTable, SnapshotTable, TableKind, TokenConfig, UserConfig,
};
use tessera_stream::tables::BoundedTable;

use crate::control::RegistryRows;
use crate::detect::RunningQueries;
use crate::error::NodeError;
use crate::lifecycle::Shutdown;
use crate::store::{StoredStream, TelemetryStore};

/// The `[sql]` section: where the Flight SQL endpoint listens and who may use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// Where the endpoint listens (e.g. `0.0.0.0:50051`); unset: no endpoint.
    pub listen: Option<SocketAddr>,
    /// Users (`[[sql.users]]`): name, Argon2id `password_hash`, role, site.
    pub users: Vec<UserConfig>,
    /// Long-lived bearer tokens (`[[sql.tokens]]`): hex SHA-256 and the user they act as.
    pub tokens: Vec<TokenConfig>,
    /// A TOML file with more `[[users]]` and `[[tokens]]`, in the same form (e.g. a mounted
    /// Kubernetes Secret, so that no hash is in the config), added to these at start.
    pub credentials_file: Option<std::path::PathBuf>,
    /// How long a token from the handshake stays valid.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Entries the `query_audit` table keeps (the newest).
    pub audit_rows: usize,
    /// Bytes the `query_audit` table holds at most (the oldest entries go first); each entry
    /// keeps at most the first 4 KiB of its SQL.
    pub audit_bytes: usize,
    /// Memory one query's operators may hold; beyond it the query fails (`RESOURCE_EXHAUSTED`).
    pub query_memory_bytes: usize,
    /// How long one query may run, its result stream included (`DEADLINE_EXCEEDED`).
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// The longest SQL text taken.
    pub query_max_sql_bytes: usize,
    /// The most bytes of parameters bound to a prepared statement.
    pub query_max_param_bytes: usize,
    /// Sign-ins (Argon2id password checks) that run at once; more wait their turn.
    pub sign_ins_at_once: usize,
    /// Readings a group must hold before an aggregate of a column above a caller's grade
    /// (e.g. an analyst's `avg(vibration_x_rms)`) is released to them; smaller groups are
    /// dropped at this site as the query runs. Also the readings a `motor_windows` window
    /// must have counted before it is shown to such a caller.
    pub min_group_rows: u64,
    /// The event time such a group (or window) must span, first reading to last.
    #[serde(with = "humantime_serde")]
    pub min_group_span: Duration,
    /// The other sites' SQL endpoints (`[[sql.peers]]`: site, addr): with them, the `fleet`
    /// schema spans every site.
    pub peers: Vec<Peer>,
    /// The token the sites' nodes present to each other (the same at every site); required
    /// with peers.
    pub federation_token: Option<String>,
    /// How long another site may take to answer a fragment (and this site's nodes, together,
    /// theirs: retries while partitions move included).
    #[serde(with = "humantime_serde")]
    pub fragment_timeout: Duration,
    /// The SQL endpoints (host:port) of this site's *other* nodes, when the site runs several
    /// in one consumer group: a query at any of them then answers for every partition of the
    /// site exactly once (`tessera_sql::site`). Needs `federation_token` and `[state] dir`.
    pub site_nodes: Vec<String>,
    /// How this site's other nodes reach this endpoint (host:port): an entry of `site_nodes`
    /// equal to it is this node and skipped, so every node of a site can share one list.
    pub advertise: Option<String>,
}

impl Default for SqlConfig {
    fn default() -> Self {
        let limits = QueryLimits::default();
        Self {
            listen: None,
            users: Vec::new(),
            tokens: Vec::new(),
            credentials_file: None,
            session_ttl: Duration::from_secs(8 * 3600),
            audit_rows: 100_000,
            audit_bytes: 32 << 20,
            query_memory_bytes: limits.memory_bytes,
            query_timeout: limits.timeout,
            query_max_sql_bytes: limits.max_sql_bytes,
            query_max_param_bytes: limits.max_param_bytes,
            sign_ins_at_once: limits.sign_ins_at_once,
            min_group_rows: GroupPolicy::default().min_rows,
            min_group_span: GroupPolicy::default().min_span,
            peers: Vec::new(),
            federation_token: None,
            fragment_timeout: Duration::from_secs(30),
            site_nodes: Vec::new(),
            advertise: None,
        }
    }
}

impl SqlConfig {
    /// The per-query bounds these settings give.
    pub fn limits(&self) -> QueryLimits {
        QueryLimits {
            memory_bytes: self.query_memory_bytes,
            timeout: self.query_timeout,
            max_sql_bytes: self.query_max_sql_bytes,
            max_param_bytes: self.query_max_param_bytes,
            sign_ins_at_once: self.sign_ins_at_once,
        }
    }

    /// The site's other nodes: `site_nodes` without this node's own `advertise` address.
    pub fn other_site_nodes(&self) -> Vec<String> {
        self.site_nodes.iter().filter(|a| Some(*a) != self.advertise.as_ref()).cloned().collect()
    }

    /// The group policy these settings give (the floor the cluster's rules raise).
    pub fn group_policy(&self) -> GroupPolicy {
        GroupPolicy { min_rows: self.min_group_rows, min_span: self.min_group_span }
    }

    /// Checks the users and tokens (hashes parse, operators name a site); errors name the entry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(!self.session_ttl.is_zero(), "session_ttl", "must be longer than 0")?;
        ensure(self.audit_rows > 0, "audit_rows", "must be positive")?;
        ensure(self.audit_bytes >= 1 << 20, "audit_bytes", "must be at least 1 MiB")?;
        ensure(self.query_memory_bytes >= 1 << 20, "query_memory_bytes", "must be at least 1 MiB")?;
        ensure(!self.query_timeout.is_zero(), "query_timeout", "must be longer than 0")?;
        ensure(self.query_max_sql_bytes >= 1024, "query_max_sql_bytes", "must be at least 1024")?;
        ensure(self.query_max_param_bytes >= 1024, "query_max_param_bytes", "must be at least 1024")?;
        ensure(self.sign_ins_at_once >= 1, "sign_ins_at_once", "must be at least 1")?;
        ensure(self.min_group_rows >= 2, "min_group_rows", "must be at least 2 (one reading is its own value)")?;
        ensure(self.listen.is_none() || !self.users.is_empty(), "users", "the endpoint needs at least one user")?;
        ConfigUsers::new(&self.users, &self.tokens)?;
        if !self.peers.is_empty() || !self.site_nodes.is_empty() {
            ensure(
                self.federation_token.as_deref().is_some_and(|t| t.len() >= 16),
                "federation_token",
                "peers and site_nodes need a shared token of at least 16 characters",
            )?;
        }
        for (i, addr) in self.site_nodes.iter().enumerate() {
            ensure(addr.contains(':'), &format!("site_nodes[{i}]"), "needs a host:port")?;
        }
        for (i, p) in self.peers.iter().enumerate() {
            ensure(
                !p.site.is_empty() && p.addr.contains(':'),
                &format!("peers[{i}]"),
                "needs a site and a host:port addr",
            )?;
            for (j, a) in p.fallbacks.iter().enumerate() {
                ensure(a.contains(':'), &format!("peers[{i}].fallbacks[{j}]"), "needs a host:port")?;
            }
        }
        Ok(())
    }
}

/// The tables a node serves over SQL: its engine's `shared` tables, the queries it runs, the
/// partitions it answers for (from its ingest's `ownership`), and with a control plane, the
/// registry's `sites` and `motors`.
pub fn served_tables(
    shared: Vec<(&'static str, Arc<dyn TableProvider>)>,
    running: &RunningQueries,
    registry: Option<&RegistryRows>,
    store: Option<&TelemetryStore>,
    ownership: Arc<tessera_ingest::IngestMetrics>,
) -> Vec<ServedTable> {
    let metrics = ownership.clone();
    let owned: crate::store::OwnedPartitions =
        Arc::new(move || metrics.ownership().owned.iter().map(|(t, p)| format!("{t}/{p}")).collect());
    let mut tables: Vec<ServedTable> = shared
        .into_iter()
        .map(|(name, provider)| match (name, store) {
            // With a store, a stored stream's table is its whole kept history (the segments
            // and the rows not yet cut), not only the newest rows in memory.
            (name, Some(store)) => match StoredStream::of_table(name) {
                Some(stream) => (name, store.table(stream, owned.clone()) as Arc<dyn TableProvider>),
                None => (name, provider),
            },
            (name, None) => (name, provider),
        })
        .map(|(name, provider)| ServedTable {
            name: name.to_string(),
            provider,
            kind: if name == "telemetry" { TableKind::Raw } else { TableKind::Derived },
        })
        .collect();
    if let Some(store) = store {
        tables.push(ServedTable { name: "segments".into(), provider: store.segments_table(), kind: TableKind::Audit });
    }
    tables.push(ServedTable {
        name: tessera_sql::site::PARTITIONS.into(),
        provider: partitions_table(ownership),
        kind: TableKind::Cluster,
    });
    let list = running.clone();
    tables.push(ServedTable {
        name: "continuous_queries".into(),
        provider: SnapshotTable::new(RunningQueries::schema(), move || list.rows()),
        kind: TableKind::Derived,
    });
    if let Some(registry) = registry {
        let (r, schema) = (registry.clone(), sites_schema());
        let sites = SnapshotTable::new(schema.clone(), move || {
            let (sites, _) = r.get();
            let nodes =
                |s: &tessera_proto::raft::Site| s.nodes.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(sites.iter().map(|s| s.site.as_str()))),
                Arc::new(StringArray::from_iter_values(sites.iter().map(|s| s.name.as_str()))),
                Arc::new(UInt64Array::from_iter_values(sites.iter().map(|s| s.motors))),
                Arc::new(StringArray::from_iter_values(sites.iter().map(nodes))),
            ];
            RecordBatch::try_new(schema.clone(), columns).map(|b| vec![b]).unwrap_or_default()
        });
        tables.push(ServedTable { name: "sites".into(), provider: sites, kind: TableKind::Cluster });
        let (r, schema) = (registry.clone(), motors_schema());
        let motors = SnapshotTable::new(schema.clone(), move || {
            let (_, motors) = r.get();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(motors.iter().map(|m| m.motor.as_str()))),
                Arc::new(StringArray::from_iter_values(motors.iter().map(|m| m.site.as_str()))),
                Arc::new(StringArray::from_iter(
                    motors.iter().map(|m| Some(m.machine_class.as_str()).filter(|c| !c.is_empty())),
                )),
            ];
            RecordBatch::try_new(schema.clone(), columns).map(|b| vec![b]).unwrap_or_default()
        });
        tables.push(ServedTable { name: "motors".into(), provider: motors, kind: TableKind::Cluster });
    }
    tables
}

/// The `partitions` table: per input topic, its partition count, the partitions this node
/// answers for, and their generation (`tessera_sql::site` reads it).
fn partitions_table(ingest: Arc<tessera_ingest::IngestMetrics>) -> Arc<SnapshotTable> {
    tessera_sql::site::partitions_table(move || {
        let o = ingest.ownership();
        o.topic_partitions
            .iter()
            .map(|(topic, partitions)| tessera_sql::site::TopicOwnership {
                topic: topic.clone(),
                partitions: *partitions,
                owned: o.owned.iter().filter(|(t, _)| t == topic).map(|(_, p)| *p).collect(),
                generation: o.generation,
            })
            .collect()
    })
}

fn sites_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("site_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("motors", DataType::UInt64, false),
        Field::new("nodes", DataType::Utf8, false),
    ]))
}

fn motors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("motor_id", DataType::Utf8, false),
        Field::new("site_id", DataType::Utf8, false),
        // Set in the registry (`tessera cluster set-machine-class`); null: the node's default.
        Field::new("machine_class", DataType::Utf8, true),
    ]))
}

/// The node's query audit: every query asked of its endpoint (run or refused, with why), in
/// the admin-only `query_audit` table (the newest `rows`) and as `tessera::audit` log events.
pub struct QueryAuditTable {
    table: Arc<BoundedTable>,
}

impl QueryAuditTable {
    /// Keeps the newest `rows` entries, in at most `bytes`.
    pub fn new(rows: usize, bytes: usize) -> Arc<Self> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("user", DataType::Utf8, false),
            Field::new("role", DataType::Utf8, false),
            Field::new("sql", DataType::Utf8, false),
            Field::new("refused", DataType::Utf8, true),
            // A fleet query's fan-out: the sites that answered and those left out, each with
            // how long its fragment took, and the slowest site.
            Field::new("sites_answered", DataType::Utf8, true),
            Field::new("sites_left_out", DataType::Utf8, true),
            Field::new("slowest_site", DataType::Utf8, true),
            Field::new("slowest_site_ms", DataType::UInt64, true),
        ]));
        Arc::new(Self { table: BoundedTable::with_max_bytes(schema, rows, bytes) })
    }

    /// The table to serve.
    pub fn served(&self) -> ServedTable {
        ServedTable { name: "query_audit".into(), provider: self.table.clone(), kind: TableKind::Audit }
    }
}

/// The sites whose fragment went `answer`, each with its time (`a (12 ms), b (1803 ms)`);
/// `None` if none.
fn sites(fragments: &[SiteFragment], answer: SiteAnswer) -> Option<String> {
    let named: Vec<String> = fragments
        .iter()
        .filter(|f| f.answer == answer)
        .map(|f| format!("{} ({} ms)", f.site, f.elapsed.as_millis()))
        .collect();
    (!named.is_empty()).then(|| named.join(", "))
}

impl AuditSink for QueryAuditTable {
    fn record(&self, audit: QueryAudit) {
        let slowest = audit.fragments.iter().max_by_key(|f| f.elapsed);
        let row = RecordBatch::try_new(
            self.table.schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![tessera_core::now_ms()]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![audit.user.clone()])),
                Arc::new(StringArray::from(vec![audit.role])),
                Arc::new(StringArray::from(vec![clipped(&audit.sql, AUDIT_SQL_BYTES)])),
                Arc::new(StringArray::from(vec![audit.refused.clone()])),
                Arc::new(StringArray::from(vec![sites(&audit.fragments, SiteAnswer::Answered)])),
                Arc::new(StringArray::from(vec![sites(&audit.fragments, SiteAnswer::LeftOut)])),
                Arc::new(StringArray::from(vec![slowest.map(|f| f.site.clone())])),
                Arc::new(UInt64Array::from(vec![slowest.map(|f| f.elapsed.as_millis() as u64)])),
            ],
        );
        match row {
            Ok(row) => self.table.append(row),
            Err(e) => tracing::error!(error = %e, "query audit row"),
        }
        LogAudit.record(audit);
    }
}

/// The most of a query's SQL text an audit row keeps.
const AUDIT_SQL_BYTES: usize = 4 << 10;

/// `text`, cut to at most `max` bytes (on a character boundary) with a note of its length.
fn clipped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let end = (0..=max).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// A running Flight SQL endpoint.
pub struct SqlEndpoint {
    endpoint: Arc<FlightSqlEndpoint>,
    server_tls: Option<tessera_tls::ServerTls>,
    refusals: Arc<tessera_tls::Refusals>,
    latency: Arc<tessera_core::LatencyHistogram>,
    site_fragments: Arc<tessera_sql::fanout::SiteFragmentStats>,
}

impl SqlEndpoint {
    /// The endpoint serving `tables` of `site`, with the `query_audit` table of what it was
    /// asked, running queries on `queries`. With `tls`, it speaks TLS only (client
    /// certificates optional for people, required of other sites' nodes) and calls peers with
    /// mTLS.
    pub fn new(
        config: &SqlConfig,
        site: &str,
        mut tables: Vec<ServedTable>,
        grades: tessera_core::LiveGrades,
        group_policy: LiveGroupPolicy,
        tls: Option<Arc<tessera_tls::TlsMaterial>>,
        queries: tokio::runtime::Handle,
    ) -> Result<Self, NodeError> {
        let users = ConfigUsers::new(&config.users, &config.tokens)?;
        let mut auth = Authenticator::new(Box::new(users), config.session_ttl);
        let audit = QueryAuditTable::new(config.audit_rows, config.audit_bytes);
        tables.push(audit.served());
        let mut catalog =
            Catalog::new(site, tables).with_grades(grades).with_limits(config.limits()).with_group_policy(group_policy);
        if let Some(token) = &config.federation_token {
            auth = auth.with_federation_token(token);
            if !config.peers.is_empty() {
                catalog = catalog.with_federation(Federation {
                    peers: config.peers.clone(),
                    token: token.clone(),
                    timeout: config.fragment_timeout,
                    tls: tessera_tls::ClientTls::from_material(tls.as_ref()),
                });
            }
            let others = config.other_site_nodes();
            if !others.is_empty() {
                catalog = catalog.with_site_nodes(SiteNodes {
                    addrs: others,
                    token: token.clone(),
                    timeout: config.fragment_timeout,
                    tls: tessera_tls::ClientTls::from_material(tls.as_ref()),
                });
            }
        }
        let refusals = Arc::new(tessera_tls::Refusals::default());
        let mut endpoint = FlightSqlEndpoint::new(Arc::new(catalog), Arc::new(auth), audit, queries)?;
        let server_tls = match &tls {
            Some(material) => {
                endpoint = endpoint.require_node_certificates(refusals.clone());
                Some(tessera_tls::ServerTls {
                    config: material.server_config(tessera_tls::ClientAuth::Optional).map_err(|e| e.within("tls"))?,
                    endpoint: "sql",
                    refusals: refusals.clone(),
                })
            }
            None => None,
        };
        let latency = endpoint.query_latency();
        let site_fragments = endpoint.site_fragments();
        Ok(Self { endpoint: Arc::new(endpoint), server_tls, refusals, latency, site_fragments })
    }

    /// What it refuses for want of a fitting certificate.
    pub fn refusals(&self) -> &Arc<tessera_tls::Refusals> {
        &self.refusals
    }

    /// Per answering site: how fleet queries' fragments went, and how long they took.
    pub fn site_fragments(&self) -> Arc<tessera_sql::fanout::SiteFragmentStats> {
        self.site_fragments.clone()
    }

    /// Query latency: arrival to last row sent, or to the refusal.
    pub fn query_latency(&self) -> Arc<tessera_core::LatencyHistogram> {
        self.latency.clone()
    }

    /// The endpoint itself, shared (the HTTP API runs its queries through it).
    pub fn shared(&self) -> Arc<FlightSqlEndpoint> {
        self.endpoint.clone()
    }

    /// Serves on `listener` until `shutdown`.
    pub async fn serve(self, listener: tokio::net::TcpListener, shutdown: Shutdown) -> Result<(), NodeError> {
        let addr =
            listener.local_addr().map_err(|source| NodeError::Io { what: "the SQL listener's address", source })?;
        tracing::info!(%addr, tls = self.server_tls.is_some(), "Flight SQL endpoint listening");
        let service = arrow_flight::flight_service_server::FlightServiceServer::from_arc(self.endpoint);
        let router = tonic::transport::Server::builder().add_service(service);
        tessera_tls::serve(router, listener, self.server_tls, shutdown.wait())
            .await
            .map_err(|source| NodeError::Serve { what: "SQL endpoint", source })
    }
}
