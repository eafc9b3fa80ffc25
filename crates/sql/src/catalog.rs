//! The tables the endpoint serves and who may read which.
//!
//! Every query gets a fresh DataFusion context over the served tables (catalog `tessera`,
//! schema `public`, plus `information_schema`); DDL, DML and other statements are refused.
//! Access is decided on the planned query by the grades of the columns it returns raw (see
//! [`Catalog::check`]); the audit tables are for admins only. Refusals are PermissionDenied.
//! A caller's context, which adds the `fleet` schema on top of these tables, is built by the
//! `session` module ([`Catalog::context`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;

use tessera_core::{DataGrade, GradeMap, LiveGrades};

use crate::error::SqlError;
use crate::federation::{FLEET, Federation};
use crate::identity::{Identity, Role};

/// The catalog name clients see.
pub const CATALOG: &str = "tessera";
/// The schema of the served tables.
pub const SCHEMA: &str = "public";

/// What a table holds. Who may read its columns is decided by their grades
/// ([`Catalog::check`]); the kind only marks the admin-only tables and which tables have a
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
    grades: LiveGrades,
}

impl Catalog {
    /// The tables of the node at `site`.
    pub fn new(site: impl Into<String>, tables: Vec<ServedTable>) -> Self {
        Self { site: site.into(), tables, federation: None, grades: LiveGrades::new(GradeMap::builtin()) }
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

    /// A fresh context over this site's served tables, with `information_schema` (what a
    /// fragment runs in; a caller's query gets [`Catalog::context`], which adds `fleet`).
    pub fn local_context(&self) -> Result<SessionContext, SqlError> {
        let config =
            SessionConfig::new().with_information_schema(true).with_default_catalog_and_schema(CATALOG, SCHEMA);
        let ctx = SessionContext::new_with_config(config);
        for t in &self.tables {
            ctx.register_table(t.name.as_str(), t.provider.clone()).map_err(SqlError::from_datafusion)?;
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

    /// Refuses the plan if `who` may not see what it returns. The audit table is for admins
    /// only. Beyond that, access follows the columns' grades ([`GradeMap`]) and how they come
    /// out: a column that reaches the result row by row is *raw*; one that only feeds an
    /// aggregate is not (see [`raw_grade`]).
    ///
    /// - Admins, and operators of this site: everything of this site.
    /// - Fleet analysts, and operators of other sites: raw `general` columns only, and
    ///   aggregates of anything.
    /// - Whatever the role, an answer that leaves the site (a fragment asked by another site's
    ///   node) never carries raw `core` columns.
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
        let raw = raw_grade(plan, &self.grades.current());
        let own_site = match who.role {
            Role::Admin => true,
            Role::SiteOperator => who.site.as_deref() == Some(self.site.as_str()),
            Role::FleetAnalyst => false,
        };
        let allowed = if own_site { DataGrade::Core } else { DataGrade::General };
        let allowed = if who.via_peer { allowed.min(DataGrade::Important) } else { allowed };
        if raw > allowed {
            let why = if who.via_peer && own_site {
                "raw core columns never leave their site".to_string()
            } else {
                format!("{} may read raw {} columns at most (aggregates of any)", who.role.name(), allowed)
            };
            return Err(SqlError::PermissionDenied(format!(
                "{} ({}) may not read raw {raw} columns of site {}: {why}",
                who.user,
                who.role.name(),
                self.site
            )));
        }
        Ok(())
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

/// The highest grade of a column whose values reach `plan`'s rows one by one: the maximum of
/// [`raw_column_grades`].
pub fn raw_grade(plan: &LogicalPlan, grades: &GradeMap) -> DataGrade {
    raw_column_grades(plan, grades).into_iter().max().unwrap_or(DataGrade::General)
}

/// For each output column of `plan`, the highest grade of a scanned column whose values reach
/// it row by row (its *lineage*). A scan gives its columns' grades (a `fleet` scan `general`:
/// each site checks its own fragment); a projection or window
/// passes on the grades of the columns each expression reads (and of any scalar subquery in
/// it); an aggregate passes on its grouping columns' grades, its aggregates are `general`;
/// filters, sorts, limits and aliases keep their input's; joins and unions combine theirs.
/// Anything else counts as the highest grade of all its inputs (conservative).
pub fn raw_column_grades(plan: &LogicalPlan, grades: &GradeMap) -> Vec<DataGrade> {
    let width = plan.schema().fields().len();
    let inputs = plan.inputs();
    let of_input = |input: &LogicalPlan, input_grades: &[DataGrade], e: &Expr| -> DataGrade {
        let mut g = DataGrade::General;
        let _ = e.apply(|x| {
            match x {
                Expr::Column(c) => {
                    g = g.max(
                        input
                            .schema()
                            .index_of_column(c)
                            .ok()
                            .and_then(|i| input_grades.get(i).copied())
                            .unwrap_or_else(|| input_grades.iter().copied().max().unwrap_or(DataGrade::Core)),
                    );
                }
                Expr::ScalarSubquery(sq) => g = g.max(raw_grade(&sq.subquery, grades)),
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        g
    };
    match plan {
        // What a `fleet` scan returns is decided by each site, on its fragment.
        LogicalPlan::TableScan(scan) if scan.table_name.schema() == Some(FLEET) => vec![DataGrade::General; width],
        LogicalPlan::TableScan(scan) => {
            scan.projected_schema.fields().iter().map(|f| grades.grade(scan.table_name.table(), f.name())).collect()
        }
        LogicalPlan::Projection(p) => {
            let input = raw_column_grades(&p.input, grades);
            p.expr.iter().map(|e| of_input(&p.input, &input, e)).collect()
        }
        LogicalPlan::Aggregate(agg) => {
            let input = raw_column_grades(&agg.input, grades);
            let mut out: Vec<DataGrade> = agg.group_expr.iter().map(|e| of_input(&agg.input, &input, e)).collect();
            // Grouping sets add an id column; aggregates are not raw.
            out.resize(width, DataGrade::General);
            out
        }
        LogicalPlan::Window(w) => {
            let input = raw_column_grades(&w.input, grades);
            let mut out = input.clone();
            out.extend(w.window_expr.iter().map(|e| of_input(&w.input, &input, e)));
            out
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Distinct(_)
            if inputs.len() == 1 && inputs[0].schema().fields().len() == width =>
        {
            raw_column_grades(inputs[0], grades)
        }
        LogicalPlan::Join(_) if inputs.len() == 2 => {
            let (left, right) = (raw_column_grades(inputs[0], grades), raw_column_grades(inputs[1], grades));
            let out: Vec<DataGrade> = if width == left.len() + right.len() {
                left.into_iter().chain(right).collect()
            } else if width == left.len() {
                left
            } else if width == right.len() {
                right
            } else {
                vec![left.into_iter().chain(right).max().unwrap_or(DataGrade::Core); width]
            };
            out
        }
        LogicalPlan::Union(_) => {
            let mut out = vec![DataGrade::General; width];
            for input in &inputs {
                for (o, g) in out.iter_mut().zip(raw_column_grades(input, grades)) {
                    *o = (*o).max(g);
                }
            }
            out
        }
        _ if inputs.is_empty() => vec![DataGrade::General; width],
        _ => {
            let highest = inputs.iter().flat_map(|i| raw_column_grades(i, grades)).max().unwrap_or(DataGrade::General);
            vec![highest; width]
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
