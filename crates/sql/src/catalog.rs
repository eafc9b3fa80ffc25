//! The tables the endpoint serves and who may read which.
//!
//! Every query gets a fresh DataFusion context over the served tables (catalog `tessera`,
//! schema `public`, plus `information_schema`); DDL, DML and other statements are refused.
//! Access is decided on the planned query by the grades of the columns it reads and how
//! ([`Catalog::release`], [`crate::release`]); the audit tables are for admins only. Refusals
//! are PermissionDenied.
//! A caller's context, which adds the `fleet` schema on top of these tables, is built by the
//! `session` module ([`Catalog::context`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;

use tessera_core::{DataGrade, GradeMap, LiveGrades};

use crate::error::SqlError;
use crate::federation::{Federation, NODE, SiteNodes};
use crate::identity::{Identity, Role};
use crate::limits::QueryLimits;
use crate::release::{GroupPolicy, LiveGroupPolicy};

/// The catalog name clients see.
pub const CATALOG: &str = "tessera";
/// The schema of the served tables.
pub const SCHEMA: &str = "public";

/// What a table holds. Who may read its columns is decided by their grades
/// ([`Catalog::release`]); the kind only marks the admin-only tables and which tables have a
/// `fleet` twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Site-local raw telemetry (graded per column like every table).
    Raw,
    /// Windows, alerts, queries, registry.
    Derived,
    /// Who asked what: admins only.
    Audit,
    /// Cluster-wide metadata every node holds alike (sites, motors): not in `fleet` (it would only repeat itself once per site).
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
    /// Its kind.
    pub kind: TableKind,
}

/// The served tables of one site's node, and how to reach the other sites.
pub struct Catalog {
    site: String,
    tables: Vec<ServedTable>,
    federation: Option<Federation>,
    site_nodes: Option<SiteNodes>,
    grades: LiveGrades,
    limits: QueryLimits,
    group_policy: LiveGroupPolicy,
}

impl Catalog {
    /// The tables of the node at `site`.
    pub fn new(site: impl Into<String>, tables: Vec<ServedTable>) -> Self {
        Self {
            site: site.into(),
            tables,
            federation: None,
            site_nodes: None,
            grades: LiveGrades::new(GradeMap::builtin()),
            limits: QueryLimits::default(),
            group_policy: LiveGroupPolicy::new(GroupPolicy::default()),
        }
    }

    /// Bounds every query's memory, time and text with `limits`.
    pub fn with_limits(mut self, limits: QueryLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The bounds of each query.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
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

    /// Spreads the tables whose rows belong to motors over this node and the site's other
    /// `nodes` ([`crate::site`]).
    pub fn with_site_nodes(mut self, nodes: SiteNodes) -> Self {
        self.site_nodes = Some(nodes);
        self
    }

    /// The site's other nodes, if the site has several.
    pub fn site_nodes(&self) -> Option<&SiteNodes> {
        self.site_nodes.as_ref()
    }

    /// The site this catalog's raw tables belong to.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The served tables.
    pub fn tables(&self) -> &[ServedTable] {
        &self.tables
    }

    /// A fresh context over this node's served tables, in `public` and again in `node`, with
    /// `information_schema` (what a fragment for this node runs in; a caller's query gets
    /// [`Catalog::context`], whose `public` tables span the site's nodes and which adds `fleet`).
    pub fn local_context(&self) -> Result<SessionContext, SqlError> {
        let config =
            SessionConfig::new().with_information_schema(true).with_default_catalog_and_schema(CATALOG, SCHEMA);
        // A runtime per query: its memory pool bounds this query alone.
        let ctx = SessionContext::new_with_config_rt(config, self.limits.runtime()?);
        let catalog = ctx.catalog(CATALOG).ok_or_else(|| SqlError::internal("no default catalog"))?;
        catalog
            .register_schema(NODE, Arc::new(datafusion::catalog::MemorySchemaProvider::new()))
            .map_err(SqlError::from_datafusion)?;
        for t in &self.tables {
            ctx.register_table(t.name.as_str(), t.provider.clone()).map_err(SqlError::from_datafusion)?;
            ctx.register_table(datafusion::common::TableReference::partial(NODE, t.name.as_str()), t.provider.clone())
                .map_err(SqlError::from_datafusion)?;
        }
        Ok(ctx)
    }

    /// Plans one read-only statement (no DDL, DML or `SET`); errors carry DataFusion's message.
    pub async fn plan(&self, ctx: &SessionContext, sql: &str) -> Result<LogicalPlan, SqlError> {
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = ctx.sql_with_options(sql, options).await.map_err(|e| match e.find_root() {
            datafusion::error::DataFusionError::Plan(m)
                if m.contains("not supported")
                    && (m.contains("DDL") || m.contains("DML") || m.contains("Statement")) =>
            {
                SqlError::PermissionDenied(format!("only queries are allowed: {m}"))
            }
            _ => SqlError::from_datafusion(e),
        })?;
        Ok(df.into_unoptimized_plan())
    }

    /// Plans `sql` in `ctx`, checks it for `who` ([`Catalog::release`]) and runs it: how a
    /// fragment is answered in process.
    pub(crate) async fn run_checked(
        &self,
        ctx: &SessionContext,
        who: &Identity,
        sql: &str,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        let plan = self.plan(ctx, sql).await?;
        let plan = self.release(who, ctx, plan)?;
        let df = ctx.execute_logical_plan(plan).await.map_err(SqlError::from_datafusion)?;
        df.collect().await.map_err(SqlError::from_datafusion)
    }

    /// `plan` as it may run for `who`, or why it may not. The audit table is for admins only.
    /// Beyond that, each caller has an *allowance*, the highest grade they may read row by row:
    ///
    /// - admins and operators of this site: `core` (everything of this site). An admin's site
    ///   is the one configured, else the site whose node they signed in at
    ///   ([`Identity::at_home`]): a fragment for an admin of another site is answered as for a
    ///   fleet analyst;
    /// - fleet analysts, and operators and admins of other sites: `general`;
    /// - whatever the role, an answer that leaves the site (a fragment asked by another site's
    ///   node) at most `important`: raw `core` never leaves its site.
    ///
    /// Columns above the allowance may only be read through aggregates of groups that meet
    /// the site's [`GroupPolicy`], enforced as the query runs ([`crate::release`]).
    pub fn release(&self, who: &Identity, ctx: &SessionContext, plan: LogicalPlan) -> Result<LogicalPlan, SqlError> {
        let mut scanned = Vec::new();
        plan.apply_with_subqueries(|node| {
            // `fleet` tables are checked by each site, on its fragment; tables spread over
            // the site's nodes by each node.
            if let LogicalPlan::TableScan(scan) = node
                && !crate::federation::answered_by_fragments(scan)
            {
                scanned.push(scan.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(SqlError::from_datafusion)?;
        for name in &scanned {
            if let Some(table) = self.tables.iter().find(|t| &t.name == name)
                && table.kind == TableKind::Audit
                && who.role != Role::Admin
            {
                return Err(SqlError::PermissionDenied(format!(
                    "{} ({}) may not read audit table {name} of site {}",
                    who.user,
                    who.role.name(),
                    self.site
                )));
            }
        }
        let allowed = self.allowance(who);
        let denied = |raw: DataGrade, why: String| {
            let never = if who.via_peer && allowed == DataGrade::Important && raw == DataGrade::Core {
                "; raw core columns never leave their site"
            } else {
                ""
            };
            SqlError::PermissionDenied(format!(
                "{} ({}) may not read raw {raw} columns of site {} ({} may read raw {allowed} columns at most{never}): {why}",
                who.user,
                who.role.name(),
                self.site,
                who.role.name(),
            ))
        };
        let grades = self.grades.current();
        crate::release::release(plan, ctx, &grades, allowed, &self.group_policy, &denied)
    }

    /// The highest grade `who` may read row by row from this site (see [`Catalog::release`]).
    pub fn allowance(&self, who: &Identity) -> DataGrade {
        let own_site = match (who.role, who.site.as_deref()) {
            (Role::FleetAnalyst, _) => false,
            (Role::Admin | Role::SiteOperator, Some(site)) => site == self.site,
            // An admin without a site signed in here (a call from a peer always names one).
            (Role::Admin, None) => !who.via_peer,
            (Role::SiteOperator, None) => false,
        };
        let allowed = if own_site { DataGrade::Core } else { DataGrade::General };
        if who.via_peer { allowed.min(DataGrade::Important) } else { allowed }
    }

    /// The group policy this site applies to aggregates of columns above a caller's allowance.
    pub fn group_policy(&self) -> &LiveGroupPolicy {
        &self.group_policy
    }

    /// Applies `policy` (config, raised by the cluster's rules) to aggregates of columns above
    /// a caller's allowance.
    pub fn with_group_policy(mut self, policy: LiveGroupPolicy) -> Self {
        self.group_policy = policy;
        self
    }

    /// The grades this catalog applies, as of now.
    pub fn grades(&self) -> Arc<GradeMap> {
        self.grades.current()
    }

    /// Applies `grades` (config and cluster policy, merged; raised while the node runs).
    pub fn with_grades(mut self, grades: LiveGrades) -> Self {
        self.grades = grades;
        self
    }
}

/// The highest grade of the scanned columns of `plan`, subqueries included: the grade its
/// result inherits (protect at the highest level present).
pub fn input_grade(plan: &LogicalPlan, grades: &GradeMap) -> DataGrade {
    let mut highest = DataGrade::General;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            for f in scan.projected_schema.fields() {
                highest = highest.max(grades.grade(scan.table_name.table(), f.name()));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    highest
}

/// How to mark a result of `plan` with grades: each field gets the highest grade of the
/// scanned columns of its name (or, for computed ones, the highest of all), the schema the
/// highest of all ([`input_grade`]), under [`tessera_core::GRADE_METADATA_KEY`].
pub fn graded_result(
    plan: &LogicalPlan,
    grades: &GradeMap,
) -> impl Fn(&datafusion::arrow::datatypes::Schema) -> SchemaRef + use<> {
    let highest = input_grade(plan, grades);
    let mut columns: Vec<(String, DataGrade)> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            columns.extend(
                scan.projected_schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), grades.grade(scan.table_name.table(), f.name()))),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    });
    move |schema| {
        let fields: Vec<datafusion::arrow::datatypes::Field> = schema
            .fields()
            .iter()
            .map(|f| {
                let grade = columns.iter().filter(|(n, _)| n == f.name()).map(|(_, g)| *g).max().unwrap_or(highest);
                tessera_core::with_grade(f, grade)
            })
            .collect();
        let mut metadata = schema.metadata().clone();
        metadata.insert(tessera_core::GRADE_METADATA_KEY.to_string(), highest.name().to_string());
        Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(fields, metadata))
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

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let batches = (self.rows)();
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?)
    }
}
