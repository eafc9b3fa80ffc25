//! The Flight SQL service: handshake, statements, prepared statements and metadata, over a
//! [`Catalog`], every call authenticated and every query audited.
//!
//! A statement's ticket carries its SQL text, so any call can be answered without server-side
//! state; the query is planned and its access checked again when the ticket is redeemed (with
//! the redeeming caller's identity). Prepared statements are kept per handle (random, 128
//! bits) with their owner (another caller's handle is unknown to them) until closed, or an
//! hour after their last use.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use arrow_schema::{Schema, SchemaRef};
use datafusion::arrow::array::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Authenticator;
use crate::catalog::{CATALOG, Catalog, SCHEMA, ServedTable, TableKind, graded_result};
use crate::error::SqlError;
use crate::federation::FLEET;
use crate::identity::{Identity, Role};

/// What happened to a query, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryAudit {
    /// Who asked.
    pub user: String,
    /// Their role's name.
    pub role: &'static str,
    /// The SQL.
    pub sql: String,
    /// `None` if it ran; else why it was refused or failed.
    pub refused: Option<String>,
    /// A fleet query's fragments: how each site answered, and how long it took.
    pub fragments: Vec<crate::fanout::SiteFragment>,
}

/// Where the endpoint writes what it was asked.
pub trait AuditSink: Send + Sync {
    /// Records one query (run or refused).
    fn record(&self, audit: QueryAudit);
}

/// Logs each query as a `tracing` event (target `tessera::audit`).
pub struct LogAudit;

impl AuditSink for LogAudit {
    fn record(&self, a: QueryAudit) {
        let sites: Vec<String> = a
            .fragments
            .iter()
            .map(|f| format!("{} {} {} ms", f.site, f.answer.name(), f.elapsed.as_millis()))
            .collect();
        let sites = sites.join(", ");
        match &a.refused {
            None => {
                tracing::info!(target: "tessera::audit", user = %a.user, role = a.role, sql = %a.sql, %sites, "query")
            }
            Some(why) => {
                tracing::warn!(target: "tessera::audit", user = %a.user, role = a.role, sql = %a.sql, %sites, refused = %why, "query refused")
            }
        }
    }
}

struct Prepared {
    owner: String,
    sql: String,
    params: Option<RecordBatch>,
    /// When it was last used: a handle its client never closed goes after [`PREPARED_IDLE`].
    used: std::time::Instant,
}

/// How long an unused prepared statement is kept (clients that never close leak nothing).
const PREPARED_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The Flight SQL endpoint of one node.
pub struct FlightSqlEndpoint {
    catalog: Arc<Catalog>,
    auth: Arc<Authenticator>,
    audit: Arc<dyn AuditSink>,
    sql_info: SqlInfoData,
    prepared: Mutex<HashMap<Vec<u8>, Prepared>>,
    /// Over mTLS: federated calls must come with a node's certificate; refusals counted here.
    node_certificates: Option<Arc<tessera_tls::Refusals>>,
    /// From a query's arrival to its last row sent (or its refusal).
    latency: Arc<tessera_core::LatencyHistogram>,
    /// Per answering site: how fleet queries' fragments went, and how long they took.
    site_fragments: Arc<crate::fanout::SiteFragmentStats>,
    /// Sign-ins under way (see [`crate::limits::QueryLimits::sign_ins_at_once`]).
    sign_ins: Arc<tokio::sync::Semaphore>,
    /// Where queries run: a runtime of their own, apart from the one serving calls.
    queries: tokio::runtime::Handle,
}

/// Marks a result's schema with the grades of the columns it reads.
type Grader = Arc<dyn Fn(&Schema) -> SchemaRef + Send + Sync>;

/// What a query running on the query runtime sends the relay: its graded schema first, then
/// its batches.
enum QueryOutput {
    Started(SchemaRef, Grader),
    Batch(RecordBatch),
}

/// Aborts the query task when the relay is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a sign-in waits for its turn before it is refused as `RESOURCE_EXHAUSTED`.
const SIGN_IN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Records a query's latency when its result stream ends (or is dropped by the client).
struct LatencyOnDrop {
    started: std::time::Instant,
    histogram: Arc<tessera_core::LatencyHistogram>,
}

impl Drop for LatencyOnDrop {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed());
    }
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

impl FlightSqlEndpoint {
    /// An endpoint serving `catalog` to the callers `auth` accepts, writing to `audit`; it runs
    /// queries on `queries` (a runtime apart from the one serving calls, so that a CPU-bound
    /// query cannot stall the node's servers).
    pub fn new(
        catalog: Arc<Catalog>,
        auth: Arc<Authenticator>,
        audit: Arc<dyn AuditSink>,
        queries: tokio::runtime::Handle,
    ) -> Result<Self, SqlError> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Tessera");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        let sql_info = info.build()?;
        Ok(Self {
            auth,
            audit,
            sql_info,
            prepared: Mutex::new(HashMap::new()),
            node_certificates: None,
            latency: Arc::default(),
            site_fragments: Arc::new(crate::fanout::SiteFragmentStats::for_sites(
                std::iter::once(catalog.site())
                    .chain(catalog.federation().iter().flat_map(|f| f.peers.iter().map(|p| p.site.as_str()))),
            )),
            sign_ins: Arc::new(tokio::sync::Semaphore::new(catalog.limits().sign_ins_at_once.max(1))),
            catalog,
            queries,
        })
    }

    /// The gRPC service to add to a tonic server.
    pub fn into_service(self) -> arrow_flight::flight_service_server::FlightServiceServer<Self> {
        arrow_flight::flight_service_server::FlightServiceServer::new(self)
    }

    /// Served over mTLS: a call with the federation token must also come with a node's
    /// certificate (a leaked token alone opens nothing); refusals are counted in `refusals`.
    pub fn require_node_certificates(mut self, refusals: Arc<tessera_tls::Refusals>) -> Self {
        self.node_certificates = Some(refusals);
        self
    }

    /// Signs a caller in as the Flight SQL handshake does — `Basic` credentials checked on the
    /// blocking pool, a few at a time (Argon2id is slow on purpose), or a `Bearer` session
    /// token accepted as is — and returns the session token and who it is.
    pub async fn sign_in(&self, authorization: Option<&str>) -> Result<(String, Identity), SqlError> {
        let permit = tokio::time::timeout(SIGN_IN_WAIT, self.sign_ins.clone().acquire_owned())
            .await
            .map_err(|_| SqlError::ResourceExhausted("too many sign-ins under way; try again".into()))?
            .map_err(|_| SqlError::internal("the sign-in queue is closed"))?;
        let auth = self.auth.clone();
        let header = authorization.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            auth.handshake(header.as_deref())
        })
        .await
        .map_err(|e| SqlError::internal(format!("a sign-in failed: {e}")))?
    }

    /// Signs the session of `token` out: it is refused from then on.
    pub fn sign_out(&self, token: &str) -> bool {
        self.auth.end_session(token)
    }

    /// Where the whole fleet's tables are: the `fleet` schema with federation, else this
    /// site's own (`public`).
    pub fn fleet_schema(&self) -> &'static str {
        if self.catalog.federation().is_some() { FLEET } else { SCHEMA }
    }

    /// Who a `Bearer` session token belongs to (a caller signed in with [`Self::sign_in`]).
    pub fn caller(&self, authorization: Option<&str>) -> Result<Identity, SqlError> {
        self.auth.check(authorization)
    }

    /// Runs `sql` for `who` exactly as a Flight SQL statement runs — planned, released by the
    /// grade rules, federated, within the query limits, audited — and collects its batches
    /// (for the HTTP API; their schemas carry the result's grades).
    pub async fn query(&self, who: &Identity, sql: &str) -> Result<Vec<RecordBatch>, Status> {
        let flight = self.run(who, sql, None).await?.into_inner();
        let decoded = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            flight.map_err(|status| arrow_flight::error::FlightError::Tonic(Box::new(status))),
        );
        decoded.try_collect().await.map_err(|e| match e {
            arrow_flight::error::FlightError::Tonic(status) => *status,
            other => Status::internal(other.to_string()),
        })
    }

    /// Latency of the queries run here: from arrival to the last row sent, or to the refusal.
    pub fn query_latency(&self) -> Arc<tessera_core::LatencyHistogram> {
        self.latency.clone()
    }

    /// Per answering site: how fleet queries' fragments went, and how long they took.
    pub fn site_fragments(&self) -> Arc<crate::fanout::SiteFragmentStats> {
        self.site_fragments.clone()
    }

    fn identity<T>(&self, request: &tonic::Request<T>) -> Result<Identity, Status> {
        let metadata: &MetadataMap = request.metadata();
        let header = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut who = self.auth.check_call(&header)?;
        // A node of this site asking for a caller whose answer stays in the site: answered
        // as for a caller signed in here (with mTLS, only if its certificate is of this site).
        let within_site = who.via_peer && header(crate::identity::WITHIN_SITE).is_some();
        if who.via_peer
            && let Some(refusals) = &self.node_certificates
        {
            let why = match tessera_tls::PeerIdentity::of_request(request) {
                Some(Ok(tessera_tls::PeerIdentity::Node { site, .. }))
                    if within_site && site.as_str() != self.catalog.site() =>
                {
                    Some(format!("a node of site {site} may not ask as a node of site {}", self.catalog.site()))
                }
                Some(Ok(tessera_tls::PeerIdentity::Node { .. })) => None,
                Some(Ok(other)) => Some(format!("{other} is not a node")),
                Some(Err(e)) => Some(e.to_string()),
                None => Some("no client certificate".to_string()),
            };
            if let Some(why) = why {
                refusals.refuse_identity(
                    "sql",
                    request.remote_addr(),
                    &format!("federated call for {}: {why}", who.user),
                );
                return Err(SqlError::PermissionDenied(format!(
                    "a federated call must come with a node's certificate: {why}"
                ))
                .into());
            }
        }
        if within_site {
            who.via_peer = false;
        }
        // Each call records its own fan-out (the identity may be cached between calls).
        who.fanout = crate::fanout::FanOut::for_query(header(crate::fanout::ALLOW_PARTIAL).as_deref() == Some("true"));
        Ok(who)
    }

    /// Plans `sql` for `who` and checks access; a refusal is audited here.
    async fn plan(
        &self,
        who: &Identity,
        sql: &str,
        params: Option<&RecordBatch>,
    ) -> Result<(datafusion::prelude::SessionContext, LogicalPlan), SqlError> {
        let planned: Result<_, SqlError> = async {
            self.catalog.limits().check_sql(sql)?;
            let ctx = self.catalog.context(who)?;
            let mut plan = self.catalog.plan(&ctx, sql).await?;
            if let Some(params) = params {
                plan = plan.with_param_values(param_values(params)?).map_err(SqlError::from_datafusion)?;
            }
            let plan = self.catalog.release(who, &ctx, plan)?;
            Ok((ctx, plan))
        }
        .await;
        if let Err(e) = &planned {
            self.refused(who, sql, e);
        }
        planned
    }

    fn refused(&self, who: &Identity, sql: &str, e: &SqlError) {
        self.audit.record(QueryAudit {
            user: who.user.clone(),
            role: who.role.name(),
            sql: sql.to_string(),
            refused: Some(e.to_string()),
            fragments: who.fanout.sites(),
        });
    }

    /// Runs `sql` for `who` and streams the result as Flight data. Physical planning runs the
    /// other sites' fragments of `fleet` tables: their refusals are audited here too.
    async fn run(
        &self,
        who: &Identity,
        sql: &str,
        params: Option<&RecordBatch>,
    ) -> Result<Response<DoGetStream>, Status> {
        let timer = LatencyOnDrop { started: std::time::Instant::now(), histogram: self.latency.clone() };
        let limits = self.catalog.limits().clone();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let (ctx, plan) = self.plan(who, sql, params).await?;
        // The query runs on the query runtime and this side only relays its batches: a
        // CPU-bound query cannot hold up the node's servers, and its deadline always fires
        // here. Dropping the relay (the client went away, or the deadline passed) aborts it.
        let grades = self.catalog.grades();
        let fanout = who.fanout.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<QueryOutput, SqlError>>(2);
        // The task keeps the caller's span, so the fragments it sends continue the trace.
        let task = AbortOnDrop(self.queries.spawn(tracing::Instrument::in_current_span(async move {
            let started: Result<_, SqlError> = async {
                let df = ctx.execute_logical_plan(plan).await.map_err(SqlError::from_datafusion)?;
                // Grades of the result by the columns it really reads (the optimized plan's scans).
                let optimized = df.clone().into_optimized_plan().map_err(SqlError::from_datafusion)?;
                let grade = graded_result(&optimized, &grades);
                // Planning ran the fragments: what they could not answer (only with the
                // caller's leave) is known now, and marked on the result.
                let result_schema = df.schema().as_arrow().clone();
                let stream = df.execute_stream().await.map_err(SqlError::from_datafusion)?;
                let fanned = crate::fanout::result_metadata(&fanout);
                let graded: Grader = Arc::new(move |s: &Schema| {
                    let schema = grade(s);
                    if fanned.is_empty() {
                        return schema;
                    }
                    let mut metadata = schema.metadata().clone();
                    metadata.extend(fanned.iter().map(|(k, v)| (k.to_string(), v.clone())));
                    Arc::new(schema.as_ref().clone().with_metadata(metadata))
                });
                let schema: SchemaRef = graded(&result_schema);
                Ok((schema, graded, stream))
            }
            .await;
            let mut batches = match started {
                Ok((schema, graded, batches)) => {
                    if tx.send(Ok(QueryOutput::Started(schema, graded))).await.is_err() {
                        return;
                    }
                    batches
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            while let Some(batch) = futures::StreamExt::next(&mut batches).await {
                let batch = batch.map_err(SqlError::from_datafusion);
                let failed = batch.is_err();
                if tx.send(batch.map(QueryOutput::Batch)).await.is_err() || failed {
                    return;
                }
            }
        })));
        let started = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => Err(limits.timed_out()),
            Ok(Some(Ok(QueryOutput::Started(schema, graded)))) => Ok((schema, graded)),
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(QueryOutput::Batch(_))) | None) => Err(SqlError::internal("the query ended before it started")),
        };
        let fragments = who.fanout.sites();
        self.site_fragments.record(&fragments);
        let (schema, graded) = started.inspect_err(|e| self.refused(who, sql, e))?;
        self.audit.record(QueryAudit {
            user: who.user.clone(),
            role: who.role.name(),
            sql: sql.to_string(),
            refused: None,
            fragments,
        });
        let missing = who.fanout.missing();
        let relayed = futures::stream::unfold((rx, task), |(mut rx, task)| async move {
            rx.recv().await.map(|item| (item, (rx, task)))
        });
        let batches = futures::StreamExt::map(relayed, move |item| {
            let _timer = &timer;
            match item {
                Ok(QueryOutput::Batch(b)) => {
                    let schema = graded(b.schema().as_ref());
                    b.with_schema(schema).map_err(SqlError::from)
                }
                Ok(QueryOutput::Started(..)) => Err(SqlError::internal("the query started twice")),
                Err(e) => Err(e),
            }
        })
        .map_err(|e| arrow_flight::error::FlightError::Tonic(Box::new(e.into())));
        let stream = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from);
        let mut response = Response::new(crate::limits::until_deadline(stream, deadline, &limits));
        if !missing.is_empty() {
            // A header value is one line of visible ASCII: anything else becomes '?'.
            let text: String = format!("partial answer: {}", missing.join("; "))
                .chars()
                .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
                .collect();
            if let Ok(value) = tonic::metadata::MetadataValue::try_from(text) {
                response.metadata_mut().insert(crate::fanout::WARNING_HEADER, value);
            }
        }
        Ok(response)
    }

    /// The result schema of `sql` for `who` (planned, access checked, not run).
    async fn schema_of(&self, who: &Identity, sql: &str) -> Result<Schema, SqlError> {
        let (ctx, plan) = self.plan(who, sql, None).await?;
        let optimized = ctx.state().optimize(&plan).map_err(SqlError::from_datafusion)?;
        Ok(graded_result(&optimized, &self.catalog.grades())(plan.schema().as_arrow()).as_ref().clone())
    }

    fn info(
        &self,
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(SqlError::from)?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    fn batch_stream<E>(schema: SchemaRef, batch: Result<RecordBatch, E>) -> Response<DoGetStream>
    where
        arrow_flight::error::FlightError: From<E>,
    {
        let batch = batch.map_err(arrow_flight::error::FlightError::from);
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async { batch }))
            .map_err(Status::from);
        Response::new(Box::pin(stream))
    }

    /// The prepared statements, locked.
    fn prepared(&self) -> Result<std::sync::MutexGuard<'_, HashMap<Vec<u8>, Prepared>>, SqlError> {
        self.prepared.lock().map_err(|_| SqlError::internal("prepared statements poisoned"))
    }

    fn prepared_sql(&self, who: &Identity, handle: &[u8]) -> Result<(String, Option<RecordBatch>), SqlError> {
        let mut prepared = self.prepared()?;
        match prepared.get_mut(handle) {
            Some(p) if p.owner == who.user => {
                p.used = std::time::Instant::now();
                Ok((p.sql.clone(), p.params.clone()))
            }
            _ => Err(SqlError::NotFound("unknown prepared statement handle (closed, or not yours)".into())),
        }
    }

    /// Table names of the catalog, and `information_schema`'s views, with their schemas.
    /// (The audit table is listed for admins only.)
    async fn table_list(&self, who: &Identity) -> Result<Vec<(String, String, &'static str, SchemaRef)>, SqlError> {
        let ctx = self.catalog.local_context()?;
        let mut out = Vec::new();
        let listed = |t: &&ServedTable| t.kind != TableKind::Audit || who.role == Role::Admin;
        for t in self.catalog.tables().iter().filter(listed) {
            out.push((SCHEMA.to_string(), t.name.clone(), "TABLE", t.provider.schema()));
            if self.catalog.federation().is_some() && t.kind.federated() {
                out.push((FLEET.to_string(), t.name.clone(), "TABLE", t.provider.schema()));
            }
        }
        for view in ["tables", "columns", "views", "df_settings", "schemata", "routines", "parameters"] {
            if let Ok(provider) = ctx.table_provider(format!("information_schema.{view}")).await {
                out.push(("information_schema".to_string(), view.to_string(), "VIEW", provider.schema()));
            }
        }
        Ok(out)
    }
}

/// The first row of a parameter batch, as positional parameter values (`$1`, `$2`, …).
fn param_values(batch: &RecordBatch) -> Result<ParamValues, SqlError> {
    if batch.num_rows() != 1 {
        return Err(SqlError::invalid_argument(format!(
            "bind exactly one row of parameters, not {}",
            batch.num_rows()
        )));
    }
    let values = batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0).map_err(SqlError::from_datafusion))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParamValues::List(values.into_iter().map(Into::into).collect()))
}

fn encode_schema(schema: &Schema) -> Result<Vec<u8>, SqlError> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &Default::default()).try_into()?;
    Ok(bytes.to_vec())
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlEndpoint {
    type FlightService = FlightSqlEndpoint;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        // Argon2id is slow on purpose: on the blocking pool, a few at a time, so a flood of
        // sign-ins queues here instead of stalling queries on the runtime's workers.
        let (token, who) = self.sign_in(header.as_deref()).await?;
        tracing::debug!(user = %who.user, role = who.role.name(), "flight sql handshake");
        let reply = HandshakeResponse { protocol_version: 0, payload: token.clone().into() };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        let bearer =
            format!("Bearer {token}").parse().map_err(|_| SqlError::internal("token is not a header value"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = self.identity(&request)?;
        let schema = self.schema_of(&who, &query.query).await?;
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        self.info(&schema, ticket.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = self.identity(&request)?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| SqlError::invalid_argument("the ticket is not a Tessera statement"))?;
        let span = crate::trace::query_span(request.metadata(), &who.user, who.via_peer, &sql);
        tracing::Instrument::instrument(self.run(&who, &sql, None), span).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let who = self.identity(&request)?;
        let (_, plan) = self.plan(&who, &query.query, None).await?;
        let types = plan.get_parameter_types().map_err(SqlError::from_datafusion)?;
        let mut params: Vec<(String, Option<arrow_schema::DataType>)> = types.into_iter().collect();
        params.sort_by_key(|(name, _)| name.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX));
        let fields: Vec<arrow_schema::Field> = params
            .into_iter()
            .map(|(name, t)| arrow_schema::Field::new(name, t.unwrap_or(arrow_schema::DataType::Utf8), true))
            .collect();
        let handle: [u8; 16] = rand::random();
        let mut prepared = self.prepared()?;
        let now = std::time::Instant::now();
        prepared.retain(|_, p| now.duration_since(p.used) < PREPARED_IDLE);
        prepared.insert(
            handle.to_vec(),
            Prepared { owner: who.user.clone(), sql: query.query.clone(), params: None, used: now },
        );
        drop(prepared);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.to_vec().into(),
            dataset_schema: encode_schema(plan.schema().as_arrow())?.into(),
            parameter_schema: encode_schema(&Schema::new(fields))?.into(),
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let who = self.identity(&request)?;
        self.prepared_sql(&who, &query.prepared_statement_handle)?;
        let flight = request.into_inner().map_err(arrow_flight::error::FlightError::from);
        let mut decoded = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(flight);
        let (mut batches, mut bytes) = (Vec::new(), 0);
        let limit = self.catalog.limits().max_param_bytes;
        while let Some(batch) = decoded.try_next().await? {
            bytes += batch.get_array_memory_size();
            if bytes > limit {
                return Err(SqlError::invalid_argument(format!(
                    "the parameters exceed {limit} bytes (sql.query_max_param_bytes)"
                ))
                .into());
            }
            batches.push(batch);
        }
        let params = batches.into_iter().find(|b| b.num_rows() > 0);
        if let Some(p) = self.prepared()?.get_mut(query.prepared_statement_handle.as_ref()) {
            p.params = params;
        }
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(query.prepared_statement_handle) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = self.identity(&request)?;
        let (sql, params) = self.prepared_sql(&who, &query.prepared_statement_handle)?;
        let (_, plan) = self.plan(&who, &sql, params.as_ref()).await?;
        let schema = plan.schema().as_arrow().clone();
        self.info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = self.identity(&request)?;
        let (sql, params) = self.prepared_sql(&who, &query.prepared_statement_handle)?;
        let span = crate::trace::query_span(request.metadata(), &who.user, who.via_peer, &sql);
        tracing::Instrument::instrument(self.run(&who, &sql, params.as_ref()), span).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let who = self.identity(&request)?;
        self.prepared_sql(&who, &query.prepared_statement_handle)?;
        self.prepared()?.remove(query.prepared_statement_handle.as_ref());
        Ok(())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identity(&request)?;
        self.info(
            query.clone().into_builder(&self.sql_info).schema().as_ref(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        let builder = query.into_builder(&self.sql_info);
        Ok(Self::batch_stream(builder.schema(), builder.build()))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identity(&request)?;
        self.info(query.into_builder().schema().as_ref(), query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(Self::batch_stream(builder.schema(), builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identity(&request)?;
        self.info(query.clone().into_builder().schema().as_ref(), query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        let mut builder = query.into_builder();
        for schema in [SCHEMA, "information_schema"] {
            builder.append(CATALOG, schema);
        }
        if self.catalog.federation().is_some() {
            builder.append(CATALOG, FLEET);
        }
        Ok(Self::batch_stream(builder.schema(), builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identity(&request)?;
        self.info(query.clone().into_builder().schema().as_ref(), query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = self.identity(&request)?;
        let mut builder = query.into_builder();
        for (schema, name, kind, table_schema) in self.table_list(&who).await? {
            builder.append(CATALOG, schema, name, kind, &table_schema).map_err(SqlError::from)?;
        }
        Ok(Self::batch_stream(builder.schema(), builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identity(&request)?;
        self.info(query.into_builder().schema().as_ref(), query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        Ok(Self::batch_stream(builder.schema(), builder.build()))
    }

    async fn do_get_fallback(&self, request: Request<Ticket>, message: Any) -> Result<Response<DoGetStream>, Status> {
        self.identity(&request)?;
        Err(SqlError::Unimplemented(format!("Tessera does not serve {}", message.type_url)).into())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
