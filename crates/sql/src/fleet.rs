//! Queries across sites: the tables of the `fleet` schema.
//!
//! Every table a site serves in `public` (its own data) has a `fleet` twin spanning every site.
//! A scan of a `fleet` table becomes one SQL *fragment* per site: the scanned columns, the
//! filters DataFusion pushed into the scan, and the limit, over that site's `public` table.
//! The local site runs its fragment in process; every other site gets it over Flight SQL,
//! sent with the federation token and the caller's identity (`x-tessera-as-*` headers), and
//! plans and checks it itself under that identity: each site decides what leaves it (a refusal
//! comes back with its gRPC code). An aggregate over a `fleet` table goes further (see
//! [`crate::pushdown`]): each site computes partial aggregates and the coordinator merges them,
//! so only one row per group and site crosses the network.
//!
//! Fragments run in parallel and their results are collected on the coordinator before the
//! rest of the plan runs (they are small: partial aggregates, or filtered rows); what the other
//! sites send is bounded by `sql.query_memory_bytes` (beyond it the query fails with
//! `RESOURCE_EXHAUSTED`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::array::RecordBatchOptions;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::Catalog;
use crate::error::SqlError;
use crate::fanout::{SiteAnswer, SiteFragment};
use crate::federation::{NODE, SPREAD_METADATA_KEY};
use crate::identity::Identity;
use crate::remote::{Connection, Target, run_remote};
use crate::sql_text::{quote, to_sql};

/// Where a [`FleetTable`]'s fragments go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Every site, each over its `public` table (which covers the whole site).
    Sites,
    /// Every node of this site, each over its `node` table (its own partitions' rows; see
    /// [`crate::site`]).
    SiteNodes,
}

impl Spread {
    /// The schema each fragment reads.
    pub fn fragment_schema(self) -> &'static str {
        match self {
            Spread::Sites => crate::catalog::SCHEMA,
            Spread::SiteNodes => NODE,
        }
    }
}

/// A table answered by fragments: a `fleet` table (the same table at every site), or a site's
/// `public` table when the site has several nodes (the same table at every node).
pub struct FleetTable {
    name: String,
    schema: SchemaRef,
    catalog: Arc<Catalog>,
    who: Identity,
    spread: Spread,
}

impl std::fmt::Debug for FleetTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetTable").field("name", &self.name).field("spread", &self.spread).finish()
    }
}

impl FleetTable {
    /// The served table `name` spread over sites or nodes, scanned on behalf of `who`.
    /// Its schema is marked [`SPREAD_METADATA_KEY`], so that the caller's checks leave its
    /// rows to the sites or nodes that answer for them.
    pub fn new(name: &str, schema: SchemaRef, catalog: Arc<Catalog>, who: Identity, spread: Spread) -> Self {
        let mut metadata = schema.metadata().clone();
        metadata.insert(SPREAD_METADATA_KEY.to_string(), spread.fragment_schema().to_string());
        let schema = Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata));
        Self { name: name.to_string(), schema, catalog, who, spread }
    }

    /// Where its fragments go.
    pub fn spread(&self) -> Spread {
        self.spread
    }

    /// The catalog whose sites it spans.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    /// Whom it is scanned for.
    pub fn who(&self) -> &Identity {
        &self.who
    }
}

#[async_trait]
impl TableProvider for FleetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // Each site filters what it sends; the coordinator filters again (Inexact), so a filter
        // that does not turn back into SQL just stays on the coordinator.
        Ok(filters
            .iter()
            .map(|f| {
                if to_sql(f).is_ok() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let projected: SchemaRef = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let columns: Vec<String> = projected.fields().iter().map(|f| quote(f.name())).collect();
        // No column needed (e.g. count(*)): fetch a constant, keep only the row count.
        let select = if columns.is_empty() { "1 AS \"_row\"".to_string() } else { columns.join(", ") };
        let mut sql = format!("SELECT {select} FROM {}.{}", self.spread.fragment_schema(), quote(&self.name));
        let conditions: Vec<String> = filters.iter().filter_map(|f| to_sql(f).ok()).collect();
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let batches = fragments_as(&self.catalog, &self.who, &sql, &projected, self.spread).await?;
        Ok(MemorySourceConfig::try_new_exec(&[batches], projected, None)?)
    }
}

/// [`run_fragments`] (or, spread over the site's nodes, [`crate::site::run_on_nodes`]), with
/// every answer's batches put in `schema` (the sites type their answers alike, but
/// nullability may differ; with no column, only the row counts are kept).
pub(crate) async fn fragments_as(
    catalog: &Arc<Catalog>,
    who: &Identity,
    sql: &str,
    schema: &SchemaRef,
    spread: Spread,
) -> datafusion::common::Result<Vec<RecordBatch>> {
    let batches = match spread {
        Spread::Sites => run_fragments(catalog, who, sql).await,
        Spread::SiteNodes => crate::site::run_on_nodes(catalog, who, sql).await,
    };
    let batches = batches.map_err(|e| DataFusionError::External(Box::new(e)))?;
    let batches = batches.into_iter().map(|b| {
        let options = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
        let columns = if schema.fields().is_empty() { Vec::new() } else { b.columns().to_vec() };
        RecordBatch::try_new_with_options(schema.clone(), columns, &options)
    });
    Ok(batches.collect::<Result<Vec<_>, _>>()?)
}

/// Runs `sql` (over `public` tables) at every site for `who`, in parallel: the local site in
/// process, the others over Flight SQL, each within the fragment timeout (one deadline per
/// site, over all of its endpoints). A site's refusal fails the whole query with its code; a
/// site that cannot answer in time fails it too, unless the caller takes a partial answer
/// (then it is left out and named). How each site answered, and how long it took, goes to the
/// query's [`crate::fanout::FanOut`].
pub async fn run_fragments(catalog: &Arc<Catalog>, who: &Identity, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    let Some(federation) = catalog.federation() else {
        return run_local(catalog, who, sql).await;
    };
    // Every site answers (none is cancelled half-way by another's refusal: each audits
    // what it was asked); the first refusal, local first, is the query's.
    // What the sites send is held here until the rest of the plan runs: bounded like a
    // query's own memory, over all sites together.
    let budget = std::sync::atomic::AtomicUsize::new(catalog.limits().memory_bytes);
    let remote = federation.peers.iter().enumerate().map(|(index, peer)| {
        let connection = Connection { token: &federation.token, timeout: federation.timeout, tls: &federation.tls };
        let budget = &budget;
        within(&peer.site, federation.timeout, async move {
            // The site's endpoints in turn, while one cannot answer (a node down, or its
            // site between owners of a partition); any other answer, a refusal too, is
            // the site's.
            let addrs = std::iter::once((&peer.addr, format!("peers[{index}].addr")))
                .chain(peer.fallbacks.iter().enumerate().map(|(i, a)| (a, format!("peers[{index}].fallbacks[{i}]"))));
            let mut last = None;
            for (addr, field) in addrs {
                let target = Target { what: format!("site {} ({addr})", peer.site), site: &peer.site, addr, field };
                match run_remote(&connection, &target, who, false, &[sql], budget).await {
                    Err(e @ SqlError::Unavailable { .. }) => last = Some(e),
                    answer => return answer.map(|mut a| a.remove(0)),
                }
            }
            Err(last.expect("a peer has an address"))
        })
    });
    let local = within(catalog.site(), federation.timeout, run_local(catalog, who, sql));
    let (local, remote) = futures::join!(local, futures::future::join_all(remote));
    let sites =
        std::iter::once((catalog.site(), local)).chain(federation.peers.iter().map(|p| p.site.as_str()).zip(remote));
    let mut batches = Vec::new();
    let mut failed = None;
    for (site, (elapsed, answer)) in sites {
        let (outcome, error) = match answer {
            Ok(answer) => {
                batches.extend(answer);
                (SiteAnswer::Answered, None)
            }
            // With the caller's leave, a site that cannot answer is left out, and said so.
            Err(e @ SqlError::Unavailable { .. }) if who.fanout.allowed() => {
                who.fanout.note(format!("site {site}: {e}"));
                (SiteAnswer::LeftOut, None)
            }
            Err(e @ SqlError::Unavailable { .. }) => (SiteAnswer::Unavailable, Some(e)),
            Err(e) => (SiteAnswer::Refused, Some(e)),
        };
        who.fanout.site(SiteFragment { site: site.to_string(), answer: outcome, elapsed });
        if failed.is_none() {
            failed = error;
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(batches),
    }
}

/// `answer` of `site`'s fragment, or its timeout as `UNAVAILABLE` once `timeout` passed; and
/// how long it took.
async fn within<T>(
    site: &str,
    timeout: std::time::Duration,
    answer: impl std::future::Future<Output = Result<T, SqlError>>,
) -> (std::time::Duration, Result<T, SqlError>) {
    let started = std::time::Instant::now();
    let answer = match tokio::time::timeout(timeout, answer).await {
        Ok(answer) => answer,
        Err(_) => {
            Err(SqlError::unavailable(format!("site {site} did not answer within {timeout:?} (sql.fragment_timeout)")))
        }
    };
    (started.elapsed(), answer)
}

/// Runs `sql` at this site in process, as a fragment is run (the site's context: with several
/// nodes, its `public` tables span them).
async fn run_local(catalog: &Arc<Catalog>, who: &Identity, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    catalog.run_checked(&catalog.site_context(who)?, who, sql).await
}

/// The table `name` of `schema`, spread as `spread` says.
pub(crate) fn fleet_table(
    name: &str,
    schema: &Schema,
    catalog: &Arc<Catalog>,
    who: &Identity,
    spread: Spread,
) -> Arc<FleetTable> {
    Arc::new(FleetTable::new(name, Arc::new(schema.clone()), catalog.clone(), who.clone(), spread))
}
