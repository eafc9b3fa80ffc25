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
use std::time::Duration;

use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
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
use futures::TryStreamExt as _;
use tessera_core::ConfigError;

use crate::catalog::Catalog;
use crate::error::SqlError;
use crate::federation::{Federation, Peer};
use crate::identity::{AS_ROLE, AS_SITE, AS_USER, Identity};
use crate::sql_text::{quote, to_sql};

/// A `fleet` table: the same table at every site.
pub struct FleetTable {
    name: String,
    schema: SchemaRef,
    catalog: Arc<Catalog>,
    who: Identity,
}

impl std::fmt::Debug for FleetTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetTable").field("name", &self.name).finish()
    }
}

impl FleetTable {
    /// The `fleet` twin of the served table `name`, scanned on behalf of `who`.
    pub fn new(name: &str, schema: SchemaRef, catalog: Arc<Catalog>, who: Identity) -> Self {
        Self { name: name.to_string(), schema, catalog, who }
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
        let mut sql = format!("SELECT {select} FROM public.{}", quote(&self.name));
        let conditions: Vec<String> = filters.iter().filter_map(|f| to_sql(f).ok()).collect();
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let batches = fragments_as(&self.catalog, &self.who, &sql, &projected).await?;
        Ok(MemorySourceConfig::try_new_exec(&[batches], projected, None)?)
    }
}

/// [`run_fragments`], with every site's batches put in `schema` (the sites type their answers
/// alike, but nullability may differ; with no column, only the row counts are kept).
pub(crate) async fn fragments_as(
    catalog: &Arc<Catalog>,
    who: &Identity,
    sql: &str,
    schema: &SchemaRef,
) -> datafusion::common::Result<Vec<RecordBatch>> {
    let batches = run_fragments(catalog, who, sql).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
    let batches = batches.into_iter().map(|b| {
        let options = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
        let columns = if schema.fields().is_empty() { Vec::new() } else { b.columns().to_vec() };
        RecordBatch::try_new_with_options(schema.clone(), columns, &options)
    });
    Ok(batches.collect::<Result<Vec<_>, _>>()?)
}

/// Runs `sql` (over `public` tables) at every site for `who`, in parallel: the local site in
/// process, the others over Flight SQL. A site's refusal fails the whole query with its code.
pub async fn run_fragments(catalog: &Arc<Catalog>, who: &Identity, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    let Some(federation) = catalog.federation() else {
        return run_local(catalog, who, sql).await;
    };
    // Every site answers (none is cancelled half-way by another's refusal: each audits
    // what it was asked); the first refusal, local first, is the query's.
    // What the sites send is held here until the rest of the plan runs: bounded like a
    // query's own memory, over all sites together.
    let budget = std::sync::atomic::AtomicUsize::new(catalog.limits().memory_bytes);
    let remote =
        federation.peers.iter().enumerate().map(|(index, peer)| run_remote(federation, index, peer, who, sql, &budget));
    let (local, remote) = futures::join!(run_local(catalog, who, sql), futures::future::join_all(remote));
    let mut batches = local?;
    for site in remote {
        batches.extend(site?);
    }
    Ok(batches)
}

async fn run_local(catalog: &Arc<Catalog>, who: &Identity, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    let ctx = catalog.local_context()?;
    let plan = catalog.plan(&ctx, sql).await?;
    let plan = catalog.release(who, &ctx, plan)?;
    let df = ctx.execute_logical_plan(plan).await.map_err(SqlError::from_datafusion)?;
    df.collect().await.map_err(SqlError::from_datafusion)
}

/// Runs `sql` at `peer`, the `index`th of the federation's peers, as `who`.
async fn run_remote(
    federation: &Federation,
    index: usize,
    peer: &Peer,
    who: &Identity,
    sql: &str,
    budget: &std::sync::atomic::AtomicUsize,
) -> Result<Vec<RecordBatch>, SqlError> {
    let at = |e: &dyn std::fmt::Display| format!("site {} ({}): {e}", peer.site, peer.addr);
    let endpoint = federation
        .tls
        .endpoint(&peer.addr, Duration::from_secs(3))
        .map_err(|e| ConfigError::new(format!("peers[{index}].addr"), at(&e)))?;
    let channel = endpoint
        .timeout(federation.timeout)
        .connect()
        .await
        .map_err(|e| SqlError::Unavailable { message: at(&e), source: Some(Arc::new(e)) })?;
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_token(federation.token.clone());
    client.set_header(AS_USER, who.user.clone());
    client.set_header(AS_ROLE, who.role.name());
    if let Some(site) = &who.site {
        client.set_header(AS_SITE, site.clone());
    }
    for (key, value) in crate::trace::outgoing_headers() {
        client.set_header(key, value);
    }
    let from_peer = |e: FlightError| match e {
        FlightError::Tonic(status) => SqlError::from_status(&peer.site, *status),
        other => SqlError::Unavailable { message: at(&other), source: Some(Arc::new(other)) },
    };
    let info = client.execute(sql.to_string(), None).await.map_err(from_peer)?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or_else(|| SqlError::internal(at(&"an endpoint without a ticket")))?;
        let mut stream = client.do_get(ticket).await.map_err(from_peer)?;
        while let Some(batch) = stream.try_next().await.map_err(from_peer)? {
            take(budget, batch.get_array_memory_size()).map_err(|()| {
                SqlError::ResourceExhausted(format!(
                    "the sites' answers would hold more here than one query may (sql.query_memory_bytes); \
                     aggregate or filter more at the sites (site {} was answering)",
                    peer.site
                ))
            })?;
            batches.push(batch);
        }
    }
    Ok(batches)
}

/// Takes `bytes` from `budget`, or nothing when they are not all there.
fn take(budget: &std::sync::atomic::AtomicUsize, bytes: usize) -> Result<(), ()> {
    use std::sync::atomic::Ordering;
    budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(bytes)).map(|_| ()).map_err(|_| ())
}

/// The `fleet` table of the served table `name` of `schema`.
pub(crate) fn fleet_table(name: &str, schema: &Schema, catalog: &Arc<Catalog>, who: &Identity) -> Arc<FleetTable> {
    Arc::new(FleetTable::new(name, Arc::new(schema.clone()), catalog.clone(), who.clone()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::take;

    #[test]
    fn the_sites_answers_share_one_budget_and_a_refused_batch_takes_nothing() {
        let budget = AtomicUsize::new(100);
        assert_eq!(take(&budget, 60), Ok(()));
        assert_eq!(take(&budget, 60), Err(()));
        assert_eq!(budget.load(Ordering::Acquire), 40, "the refused batch took nothing");
        assert_eq!(take(&budget, 40), Ok(()));
        assert_eq!(take(&budget, 1), Err(()));
    }
}
