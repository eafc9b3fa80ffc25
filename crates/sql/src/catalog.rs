//! The tables the endpoint serves and who may read which.
//!
//! Every query gets a fresh DataFusion context over the served tables (catalog `tessera`,
//! schema `public`, plus `information_schema`); DDL, DML and other statements are refused.
//! Access is decided on the planned query: every table it scans (subqueries included) must be
//! one the caller's role may read, else the whole query is refused with PermissionDenied.
//! Raw tables (site-local readings) are readable by admins and by the operators of this site
//! only; derived tables (windows, alerts, registry) by every role; the audit table by admins.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::context::{SessionConfig, SessionContext, SQLOptions};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::execution::SessionStateBuilder;

use crate::auth::{Identity, Role};
use crate::error::SqlError;
use crate::federation::{FLEET, Federation, fleet_table};
use crate::pushdown::PushAggregatesToSites;

/// The catalog name clients see.
pub const CATALOG: &str = "tessera";
/// The schema of the served tables.
pub const SCHEMA: &str = "public";

/// What a table holds, for access decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Site-local raw telemetry: never leaves the site except to its operators and admins.
    Raw,
    /// Windows, alerts, queries, registry: readable by every role.
    Derived,
    /// Who asked what: admins only.
    Audit,
    /// Cluster-wide metadata every node holds alike (sites, motors): readable by every role,
    /// and not in `fleet` (it would only repeat itself once per site).
    Cluster,
}

impl TableKind {
    /// Whether the table has a `fleet` twin.
    pub fn federated(self) -> bool {
        matches!(self, TableKind::Raw | TableKind::Derived)
    }
}

/// One served table.
pub struct ServedTable {
    /// Its name in `tessera.public`.
    pub name: String,
    /// Where its rows come from.
    pub provider: Arc<dyn TableProvider>,
    /// Raw or derived.
    pub kind: TableKind,
}

/// The served tables of one site's node, and how to reach the other sites.
pub struct Catalog {
    site: String,
    tables: Vec<ServedTable>,
    federation: Option<Federation>,
}

impl Catalog {
    /// The tables of the node at `site`.
    pub fn new(site: impl Into<String>, tables: Vec<ServedTable>) -> Self {
        Self { site: site.into(), tables, federation: None }
    }

    /// Serves the `fleet` schema too, spanning this site and `federation`'s peers.
    pub fn with_federation(mut self, federation: Federation) -> Self {
        self.federation = Some(federation);
        self
    }

    /// The other sites, if this node federates.
    pub fn federation(&self) -> Option<&Federation> {
        self.federation.as_ref()
    }

    /// The site this catalog's raw tables belong to.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The served tables.
    pub fn tables(&self) -> &[ServedTable] {
        &self.tables
    }

    /// A fresh context over this site's served tables, with `information_schema`.
    pub fn local_context(&self) -> Result<SessionContext, SqlError> {
        let config = SessionConfig::new().with_information_schema(true).with_default_catalog_and_schema(CATALOG, SCHEMA);
        let state = SessionStateBuilder::new().with_config(config).with_default_features().with_optimizer_rule(Arc::new(PushAggregatesToSites)).build();
        let ctx = SessionContext::new_with_state(state);
        for t in &self.tables {
            ctx.register_table(t.name.as_str(), t.provider.clone()).map_err(SqlError::from_datafusion)?;
        }
        Ok(ctx)
    }

    /// A fresh context for `who`: this site's tables, and with a federation, the `fleet`
    /// schema (every raw and derived table, across sites, scanned on `who`'s behalf).
    pub fn context(self: &Arc<Self>, who: &Identity) -> Result<SessionContext, SqlError> {
        let ctx = self.local_context()?;
        if self.federation.is_some() {
            let catalog = ctx.catalog(CATALOG).ok_or_else(|| SqlError::Internal("no default catalog".into()))?;
            catalog.register_schema(FLEET, Arc::new(MemorySchemaProvider::new())).map_err(SqlError::from_datafusion)?;
            for t in self.tables.iter().filter(|t| t.kind.federated()) {
                let table = fleet_table(&t.name, t.provider.schema().as_ref(), self, who);
                ctx.register_table(TableReference::partial(FLEET, t.name.as_str()), table).map_err(SqlError::from_datafusion)?;
            }
        }
        Ok(ctx)
    }

    /// Plans one read-only statement (no DDL, DML or `SET`); errors carry DataFusion's message.
    pub async fn plan(&self, ctx: &SessionContext, sql: &str) -> Result<LogicalPlan, SqlError> {
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = ctx.sql_with_options(sql, options).await.map_err(|e| match e.find_root() {
            datafusion::error::DataFusionError::Plan(m) if m.contains("not supported") && (m.contains("DDL") || m.contains("DML") || m.contains("Statement")) => {
                SqlError::PermissionDenied(format!("only queries are allowed: {m}"))
            }
            _ => SqlError::from_datafusion(e),
        })?;
        Ok(df.into_unoptimized_plan())
    }

    /// Refuses the plan if it scans a table `who` may not read.
    pub fn check(&self, who: &Identity, plan: &LogicalPlan) -> Result<(), SqlError> {
        let mut scanned = Vec::new();
        plan.apply_with_subqueries(|node| {
            // `fleet` tables are checked by each site, on its fragment.
            if let LogicalPlan::TableScan(scan) = node
                && scan.table_name.schema().is_none_or(|s| s != FLEET)
            {
                scanned.push(scan.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(SqlError::from_datafusion)?;
        for name in scanned {
            let Some(table) = self.tables.iter().find(|t| t.name == name) else { continue };
            let allowed = match table.kind {
                TableKind::Raw => self.may_read_raw(who),
                TableKind::Derived | TableKind::Cluster => true,
                TableKind::Audit => who.role == Role::Admin,
            };
            if !allowed {
                let what = if table.kind == TableKind::Raw { "raw table" } else { "audit table" };
                return Err(SqlError::PermissionDenied(format!("{} ({}) may not read {what} {name} of site {}", who.user, who.role.name(), self.site)));
            }
        }
        Ok(())
    }

    fn may_read_raw(&self, who: &Identity) -> bool {
        match who.role {
            Role::Admin => true,
            Role::SiteOperator => who.site.as_deref() == Some(self.site.as_str()),
            Role::FleetAnalyst => false,
        }
    }
}

/// A table whose rows are taken fresh at each scan from a function (the running queries, the
/// registry): small, always current.
pub struct SnapshotTable {
    schema: SchemaRef,
    rows: Box<dyn Fn() -> Vec<RecordBatch> + Send + Sync>,
}

impl SnapshotTable {
    /// A table of `schema` whose rows `rows` returns at each scan.
    pub fn new(schema: SchemaRef, rows: impl Fn() -> Vec<RecordBatch> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self { schema, rows: Box::new(rows) })
    }
}

impl std::fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTable").field("schema", &self.schema).finish()
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(&self, _state: &dyn Session, projection: Option<&Vec<usize>>, _filters: &[Expr], _limit: Option<usize>) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let batches = (self.rows)();
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?)
    }
}
