//! What may leave a site's tables for one caller: release by construction, not by guessing
//! each output column's lineage.
//!
//! Every column has a grade ([`GradeMap`]) and every caller an *allowance*, the highest grade
//! they may read row by row ([`crate::Catalog::release`] says whose is which). A query is
//! **open** when every column it reads (what its optimized plan's scans project or filter on)
//! is within the allowance: nothing above it can reach the answer, whatever the plan does.
//!
//! A query that reads a column above the allowance is **constrained**: it must have exactly
//! this shape, and any plan node or expression not listed is refused.
//!
//! ```text
//! [Projection | Filter | Sort | Limit | SubqueryAlias]*   over the aggregate's outputs only
//!   Aggregate   group keys over allowed columns, no ROLLUP/CUBE/GROUPING SETS; every aggregate
//!               one of ALLOWED_AGGREGATES, its argument a bare (or cast) column, no DISTINCT,
//!               FILTER or ORDER BY inside it
//!     Filter*   predicates over allowed columns only (a predicate on a value is an oracle)
//!       TableScan   one table of this site with an event-time column `ts`
//! ```
//!
//! It runs rewritten so that the site that owns the rows enforces its [`GroupPolicy`] at
//! execution: the aggregate also counts each group's rows (or uses the query's own
//! `count(*)`) and whether its `ts` spans `min_span` ([`span`], which stops looking at a group
//! once it does), and a group with fewer than `min_rows` readings or a shorter span is dropped
//! before anything above it (HAVING, ORDER BY, the client) sees it. A `fleet` aggregate is
//! pushed to the sites as such a query ([`crate::pushdown`]), so every site drops its own small
//! groups before its partials leave it.
//!
//! Tables whose rows are themselves window aggregates (`motor_windows`) are released row by
//! row instead: a query that reads their graded columns (scores, features) sees only the
//! windows that counted at least `min_rows` readings (the window's `readings` feature, which
//! the shipped rules compute) over at least `min_span`, and may read those as they are. EXPLAIN
//! of a query that could be released shows its plan; EXPLAIN ANALYZE runs it, so it is checked
//! as the query is.
//!
//! What this does not stop (docs/SECURITY.md): differencing two large groups that differ by a
//! few readings (e.g. two time ranges one reading apart) reveals those readings' sum.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::execution::context::SessionContext;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Aggregate, Expr, Filter, LogicalPlan, LogicalPlanBuilder, TableScan, cast, col, lit};
use serde::{Deserialize, Serialize};
use tessera_core::{DataGrade, GradeMap, GroupRule};

use crate::error::SqlError;
use crate::federation::answered_by_fragments;
use span::SpanReached;

mod span;

/// The aggregates a constrained column may feed: none of them returns one reading's value.
pub const ALLOWED_AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "var",
    "var_samp",
    "var_sample",
    "var_pop",
    "var_population",
    "stddev",
    "stddev_samp",
    "stddev_pop",
];

/// Tables whose rows are window aggregates, released row by row to callers below their grade
/// when the window met the group policy.
pub const WINDOW_TABLES: &[&str] = &["motor_windows"];

/// The event-time column a constrained aggregate's groups are measured on.
pub const EVENT_TIME: &str = "ts";

const INFORMATION_SCHEMA: &str = "information_schema";
const GROUP_ROWS: &str = "__tessera_group_rows";
const GROUP_SPAN: &str = "__tessera_group_span";

/// How large a group of readings must be before an aggregate of a column above a caller's
/// allowance is released to them (a site's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPolicy {
    /// Readings a group must hold.
    pub min_rows: u64,
    /// Event time a group must span, first reading to last.
    pub min_span: Duration,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        Self { min_rows: 100, min_span: Duration::from_secs(60) }
    }
}

/// The group policy a site applies: its config (the floor) raised, grade by grade, by the
/// cluster's `use` rules ([`GroupRule`], read from the Raft log by the node's control-plane
/// watcher). Clones share the rules.
#[derive(Debug, Clone)]
pub struct LiveGroupPolicy {
    floor: GroupPolicy,
    rules: Arc<RwLock<BTreeMap<DataGrade, GroupRule>>>,
}

impl LiveGroupPolicy {
    /// `floor` alone, until the cluster's rules are applied.
    pub fn new(floor: GroupPolicy) -> Self {
        Self { floor, rules: Arc::default() }
    }

    /// What an aggregate of a `grade` column needs: the floor, raised by that grade's rule.
    pub fn for_grade(&self, grade: DataGrade) -> GroupPolicy {
        let mut policy = self.floor;
        if let Some(rule) = self.rules.read().unwrap_or_else(|e| e.into_inner()).get(&grade) {
            policy.min_rows = policy.min_rows.max(rule.min_rows.unwrap_or(0));
            policy.min_span = policy.min_span.max(rule.min_span.unwrap_or_default());
        }
        policy
    }

    /// Replaces the cluster's rules with `rules`; whether anything changed.
    pub fn apply(&self, rules: BTreeMap<DataGrade, GroupRule>) -> bool {
        let mut current = self.rules.write().unwrap_or_else(|e| e.into_inner());
        let changed = *current != rules;
        *current = rules;
        changed
    }
}

/// `plan` as it may run for a caller whose allowance is `allowed`, or why it may not.
///
/// `ctx` optimizes a copy of the plan to learn which columns it reads. Window tables whose
/// columns above the allowance it reads are cut to their released windows; then the query is
/// open (returned as is) or constrained (checked for the shape above and rewritten to enforce
/// `policy`). A refusal is made by `refused` from the highest grade the query reads above the allowance
/// and what is wrong with it (the caller adds who asked).
pub fn release(
    plan: LogicalPlan,
    ctx: &SessionContext,
    grades: &GradeMap,
    allowed: DataGrade,
    policy: &LiveGroupPolicy,
    refused: &dyn Fn(DataGrade, String) -> SqlError,
) -> Result<LogicalPlan, SqlError> {
    let optimized = ctx.state().optimize(&plan).map_err(SqlError::from_datafusion)?;
    let mut read = columns_read(&optimized, grades, allowed);
    // Window tables whose graded columns it reads: cut to the released windows, which it may
    // then read as they are.
    let windows: BTreeSet<String> =
        read.iter().filter(|(t, _, _)| WINDOW_TABLES.contains(&t.as_str())).map(|(t, _, _)| t.clone()).collect();
    let plan = if windows.is_empty() {
        plan
    } else {
        let graded =
            read.iter().filter(|(t, _, _)| windows.contains(t)).map(|(_, _, g)| *g).max().unwrap_or(DataGrade::Core);
        release_windows(plan, ctx, &windows, &policy.for_grade(graded))?
    };
    read.retain(|(t, _, _)| !windows.contains(t));
    if read.is_empty() {
        // Belt and braces: what reaches the rows one by one is within the allowance (the
        // released windows as they are).
        let mut released = grades.clone();
        for table in &windows {
            let columns: Vec<String> =
                grades.stream(table).map(|s| s.columns.keys().cloned().collect()).unwrap_or_default();
            released.set(table, None, DataGrade::General);
            for column in &columns {
                released.set(table, Some(column), DataGrade::General);
            }
        }
        let raw = raw_grade(&plan, &released);
        if raw > allowed {
            return Err(refused(raw, "the answer would hold them row by row".into()));
        }
        return Ok(plan);
    }
    let above: BTreeSet<String> = read.iter().map(|(_, c, _)| c.clone()).collect();
    let highest = read.iter().map(|(_, _, g)| *g).max().unwrap_or(DataGrade::Core);
    let policy = &policy.for_grade(highest);
    let named = read.iter().map(|(t, c, g)| format!("{t}.{c} ({g})")).collect::<Vec<_>>().join(", ");
    let refuse = |what: String| {
        refused(
            highest,
            format!(
                "{named} only through count/sum/avg/var/stddev over groups of at least {} readings spanning {} s; {what}",
                policy.min_rows,
                policy.min_span.as_secs_f64()
            ),
        )
    };
    let constrained = Constrained { above: &above, policy, refuse: &refuse };
    if let LogicalPlan::Explain(explain) = &plan {
        // EXPLAIN runs nothing: it shows the plan of a query that could be released.
        constrained.above_aggregate(&explain.plan)?;
        return Ok(plan);
    }
    constrained.above_aggregate(&plan)
}

/// Cuts every scan of the window tables `windows` to the windows that met `policy`.
fn release_windows(
    plan: LogicalPlan,
    ctx: &SessionContext,
    windows: &BTreeSet<String>,
    policy: &GroupPolicy,
) -> Result<LogicalPlan, SqlError> {
    let predicate = format!(
        "features['readings'] >= {} AND CAST(window_end AS BIGINT) - CAST(window_start AS BIGINT) >= {}",
        policy.min_rows,
        policy.min_span.as_millis()
    );
    let plan = plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = &node else { return Ok(Transformed::no(node)) };
            if answered_by_fragments(scan) || !windows.contains(scan.table_name.table()) {
                return Ok(Transformed::no(node));
            }
            let schema: &DFSchema = scan.projected_schema.as_ref();
            let released = ctx.parse_sql_expr(&predicate, schema)?;
            Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(released, Arc::new(node))?)))
        })
        .map_err(SqlError::from_datafusion)?;
    Ok(plan.data)
}

/// The columns above `allowed` that `optimized`'s scans of this site's tables read, as
/// (table, column, grade). `fleet` scans are decided by each site on its fragment;
/// `information_schema` holds names and types, no values.
fn columns_read(optimized: &LogicalPlan, grades: &GradeMap, allowed: DataGrade) -> Vec<(String, String, DataGrade)> {
    let mut read = Vec::new();
    let _ = optimized.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && !answered_by_fragments(scan)
            && scan.table_name.schema() != Some(INFORMATION_SCHEMA)
        {
            let table = scan.table_name.table();
            let mut names: BTreeSet<String> = scan.projected_schema.fields().iter().map(|f| f.name().clone()).collect();
            for filter in &scan.filters {
                names.extend(filter.column_refs().into_iter().map(|c| c.name.clone()));
            }
            for name in names {
                let grade = grades.grade(table, &name);
                if grade > allowed && !read.iter().any(|(t, c, _)| t == table && *c == name) {
                    read.push((table.to_string(), name, grade));
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    read
}

/// The highest grade of a column whose values reach `plan`'s rows one by one: the maximum of
/// [`raw_column_grades`].
fn raw_grade(plan: &LogicalPlan, grades: &GradeMap) -> DataGrade {
    raw_column_grades(plan, grades).into_iter().max().unwrap_or(DataGrade::General)
}

/// For each output column of `plan`, the highest grade of a scanned column whose values reach
/// it row by row (its *lineage*). A scan gives its columns' grades (a `fleet` scan `general`:
/// each site checks its own fragment; `information_schema` too: names, no values); a projection or window
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
        // What a `fleet` scan (or a scan spread over the site's nodes) returns is decided by
        // each site (or node), on its fragment.
        LogicalPlan::TableScan(scan)
            if answered_by_fragments(scan) || scan.table_name.schema() == Some(INFORMATION_SCHEMA) =>
        {
            vec![DataGrade::General; width]
        }
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

/// The check and rewrite of a constrained query.
struct Constrained<'a> {
    /// The names of the columns above the allowance it reads.
    above: &'a BTreeSet<String>,
    policy: &'a GroupPolicy,
    refuse: &'a dyn Fn(String) -> SqlError,
}

impl Constrained<'_> {
    /// The nodes over the aggregate: they see only its outputs.
    fn above_aggregate(&self, plan: &LogicalPlan) -> Result<LogicalPlan, SqlError> {
        match plan {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::SubqueryAlias(_) => {
                let exprs = plan.expressions();
                if exprs.iter().any(has_subquery) {
                    return Err((self.refuse)("no subquery may read them".into()));
                }
                let [input] = plan.inputs()[..] else { return Err((self.refuse)("a node with two inputs".into())) };
                let input = self.above_aggregate(input)?;
                plan.with_new_exprs(exprs, vec![input]).map_err(SqlError::from_datafusion)
            }
            LogicalPlan::Aggregate(aggregate) => self.aggregate(aggregate),
            other => Err((self.refuse)(format!("{} is not allowed over them", node_name(other)))),
        }
    }

    /// The aggregate: its keys and functions, then the rewrite that drops small groups.
    fn aggregate(&self, aggregate: &Aggregate) -> Result<LogicalPlan, SqlError> {
        for key in &aggregate.group_expr {
            if matches!(key, Expr::GroupingSet(_)) {
                return Err((self.refuse)("no ROLLUP, CUBE or GROUPING SETS".into()));
            }
            if self.reads_above(key) || has_subquery(key) {
                return Err((self.refuse)(format!("they may not be grouped by ({key})")));
            }
        }
        for expr in &aggregate.aggr_expr {
            let inner = match expr {
                Expr::Alias(alias) => alias.expr.as_ref(),
                other => other,
            };
            let Expr::AggregateFunction(function) = inner else {
                return Err((self.refuse)(format!("{inner} is not an aggregate")));
            };
            let name = function.func.name();
            let params = &function.params;
            let reads = params.args.iter().any(|a| self.reads_above(a));
            if !ALLOWED_AGGREGATES.contains(&name) && reads {
                return Err((self.refuse)(format!("{name} is not one of the allowed aggregates")));
            }
            if params.filter.is_some() || !params.order_by.is_empty() {
                return Err((self.refuse)(format!("{name} may not have FILTER or ORDER BY inside")));
            }
            if reads && params.distinct {
                return Err((self.refuse)(format!("{name}(DISTINCT …) of them is not allowed")));
            }
            if params.args.iter().any(|a| has_subquery(a) || (self.reads_above(a) && !bare_column(a))) {
                return Err((self.refuse)(format!("{name} must take a column as it is, not an expression of it")));
            }
        }
        let scan = self.below_aggregate(&aggregate.input)?;
        let ts = scan.source.schema().field_with_name(EVENT_TIME).ok().map(|f| f.data_type().clone());
        let Some(DataType::Timestamp(unit, _)) = ts else {
            return Err((self.refuse)(format!("{} has no event-time column {EVENT_TIME}", scan.table_name)));
        };
        let ts = cast(Expr::Column(Column::new(Some(scan.table_name.clone()), EVENT_TIME)), DataType::Int64);
        let span = self.policy.min_span;
        let span = match unit {
            TimeUnit::Second => span.as_secs() as i64,
            TimeUnit::Millisecond => span.as_millis() as i64,
            TimeUnit::Microsecond => span.as_micros() as i64,
            TimeUnit::Nanosecond => span.as_nanos() as i64,
        };
        // The query's own count(*), when it has one, counts the group's rows already.
        let own_count = aggregate.aggr_expr.iter().position(counts_rows);
        let mut hidden = vec![SpanReached::udaf(span).call(vec![ts]).alias(GROUP_SPAN)];
        if own_count.is_none() {
            hidden.push(count(lit(1i64)).alias(GROUP_ROWS));
        }
        let aggregated = LogicalPlanBuilder::from(aggregate.input.as_ref().clone())
            .aggregate(aggregate.group_expr.clone(), aggregate.aggr_expr.iter().cloned().chain(hidden))
            .map_err(SqlError::from_datafusion)?
            .build()
            .map_err(SqlError::from_datafusion)?;
        let schema = aggregated.schema().clone();
        let rows = match own_count {
            Some(i) => {
                let (qualifier, field) = schema.qualified_field(aggregate.group_expr.len() + i);
                Expr::Column(Column::new(qualifier.cloned(), field.name()))
            }
            None => col(GROUP_ROWS),
        };
        let outputs: Vec<Expr> = (0..aggregate.schema.fields().len())
            .map(|i| {
                let (qualifier, field) = schema.qualified_field(i);
                Expr::Column(Column::new(qualifier.cloned(), field.name()))
            })
            .collect();
        let big_enough = rows.gt_eq(lit(self.policy.min_rows as i64)).and(col(GROUP_SPAN));
        LogicalPlanBuilder::from(aggregated)
            .filter(big_enough)
            .and_then(|b| b.project(outputs))
            .and_then(|b| b.build())
            .map_err(SqlError::from_datafusion)
    }

    /// Under the aggregate: filters over allowed columns, down to one scan of this site.
    fn below_aggregate<'p>(&self, plan: &'p LogicalPlan) -> Result<&'p TableScan, SqlError> {
        match plan {
            LogicalPlan::Filter(filter) => {
                if self.reads_above(&filter.predicate) || has_subquery(&filter.predicate) {
                    return Err((self.refuse)(format!("they may not be filtered on ({})", filter.predicate)));
                }
                self.below_aggregate(&filter.input)
            }
            LogicalPlan::TableScan(scan) if !answered_by_fragments(scan) => {
                if scan.filters.iter().any(|f| self.reads_above(f)) {
                    return Err((self.refuse)("they may not be filtered on".into()));
                }
                Ok(scan)
            }
            other => {
                Err((self.refuse)(format!("the aggregate must read one table directly, not {}", node_name(other))))
            }
        }
    }

    /// Whether `expr` reads a column (of any qualifier) named like one above the allowance.
    fn reads_above(&self, expr: &Expr) -> bool {
        expr.column_refs().iter().any(|c| self.above.contains(&c.name))
    }
}

/// Whether `expr` is `count(*)` (a count of a non-null literal, no DISTINCT or FILTER).
fn counts_rows(expr: &Expr) -> bool {
    let inner = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    matches!(inner, Expr::AggregateFunction(f)
        if f.func.name() == "count"
            && !f.params.distinct
            && f.params.filter.is_none()
            && matches!(f.params.args.as_slice(), [Expr::Literal(value, _)] if !value.is_null()))
}

/// A column as it is, or cast.
fn bare_column(expr: &Expr) -> bool {
    match expr {
        Expr::Column(_) => true,
        Expr::Cast(c) => bare_column(&c.expr),
        Expr::TryCast(c) => bare_column(&c.expr),
        _ => false,
    }
}

/// Whether `expr` holds a subquery anywhere.
fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) | Expr::OuterReferenceColumn(..)
        ))
    })
    .unwrap_or(true)
}

/// A plan node's kind, for a refusal (its first display line).
fn node_name(plan: &LogicalPlan) -> String {
    let shown = plan.display().to_string();
    shown.split([':', '\n']).next().unwrap_or("this plan node").trim().to_string()
}

#[cfg(test)]
mod generative;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;

    use super::*;

    /// `telemetry` of two motors: M1 with 200 readings a second apart, M2 with 3; vibration of
    /// M2's second reading is the marker 4242.42.
    fn context() -> SessionContext {
        let mut readings: Vec<(&str, i64, f64)> =
            (0..200).map(|i| ("M1", 1_000_000 + i * 1000, 1.0 + (i % 7) as f64)).collect();
        readings.extend((0..3).map(|i| ("M2", 1_000_000 + i * 1000, if i == 1 { 4242.42 } else { 2.0 })));
        telemetry(&readings.iter().map(|&(m, t, v)| (m, t, v, v * 3.0)).collect::<Vec<_>>())
    }

    /// A context with a `telemetry` table of these (motor, ts ms, vibration_x_rms, current_a).
    pub(super) fn telemetry(readings: &[(&str, i64, f64, f64)]) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("vibration_x_rms", DataType::Float64, true),
            Field::new("current_a", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(readings.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(
                    TimestampMillisecondArray::from(readings.iter().map(|r| r.1).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(readings.iter().map(|r| r.2).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(readings.iter().map(|r| r.3).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("telemetry", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        ctx
    }

    async fn released(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
        let plan = ctx.state().create_logical_plan(sql).await.map_err(SqlError::from_datafusion)?;
        let plan = release(
            plan,
            ctx,
            &GradeMap::builtin(),
            DataGrade::General,
            &LiveGroupPolicy::new(GroupPolicy::default()),
            &refused,
        )?;
        ctx.execute_logical_plan(plan).await.unwrap().collect().await.map_err(SqlError::from_datafusion)
    }

    fn refused(grade: DataGrade, why: String) -> SqlError {
        SqlError::PermissionDenied(format!("raw {grade}: {why}"))
    }

    fn rows(batches: &[RecordBatch]) -> usize {
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    fn shown(batches: &[RecordBatch]) -> String {
        datafusion::arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn general_columns_are_open_and_anything_goes() {
        let ctx = context();
        let out = released(&ctx, "SELECT motor_id, ts FROM telemetry WHERE motor_id = 'M2' ORDER BY ts").await.unwrap();
        assert_eq!(rows(&out), 3);
    }

    #[tokio::test]
    async fn allowed_aggregates_of_big_groups_are_released_and_small_groups_dropped() {
        let ctx = context();
        let out = released(
            &ctx,
            "SELECT motor_id, avg(vibration_x_rms) AS v, count(*) AS n FROM telemetry GROUP BY motor_id ORDER BY motor_id",
        )
        .await
        .unwrap();
        assert_eq!(rows(&out), 1, "{}", shown(&out));
        assert!(shown(&out).contains("M1") && !shown(&out).contains("M2"));
        // Row-sized groups, and HAVING count(*) = 1: nothing.
        for sql in [
            "SELECT motor_id, ts, avg(vibration_x_rms) FROM telemetry GROUP BY motor_id, ts",
            "SELECT motor_id, sum(vibration_x_rms) FROM telemetry GROUP BY motor_id HAVING count(*) = 1",
            "SELECT sum(vibration_x_rms) FROM telemetry WHERE motor_id = 'M2'",
            "SELECT sum(vibration_x_rms) FROM telemetry WHERE ts = to_timestamp_millis(1001000)",
        ] {
            let out = released(&ctx, sql).await.unwrap();
            assert!(!shown(&out).contains("4242"), "{sql}: {}", shown(&out));
            assert_eq!(rows(&out), 0, "{sql}: {}", shown(&out));
        }
    }

    #[tokio::test]
    async fn a_group_must_span_the_policy_s_time_too() {
        let ctx = context();
        let released = |sql: &'static str, span_s: u64| {
            let ctx = ctx.clone();
            async move {
                let plan = ctx.state().create_logical_plan(sql).await.unwrap();
                let policy = LiveGroupPolicy::new(GroupPolicy { min_rows: 100, min_span: Duration::from_secs(span_s) });
                let plan = release(plan, &ctx, &GradeMap::builtin(), DataGrade::General, &policy, &refused).unwrap();
                rows(&ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap())
            }
        };
        // 100 readings over 99 s: enough rows; the span decides.
        let whole =
            "SELECT count(vibration_x_rms) FROM telemetry WHERE motor_id = 'M1' AND ts < to_timestamp_millis(1100000)";
        // The same by motor (the per-group accumulators): M1's 200 readings span 199 s.
        let by_motor = "SELECT motor_id, avg(vibration_x_rms) FROM telemetry GROUP BY motor_id";
        for (sql, span_s, groups) in [(whole, 100, 0), (by_motor, 199, 1), (by_motor, 200, 0), (whole, 99, 1)] {
            assert_eq!(released(sql, span_s).await, groups, "{sql} at {span_s} s");
        }
    }

    #[tokio::test]
    async fn every_other_shape_over_a_constrained_column_is_refused() {
        let ctx = context();
        for sql in [
            "SELECT vibration_x_rms FROM telemetry",
            "SELECT motor_id, max(vibration_x_rms) FROM telemetry GROUP BY motor_id",
            "SELECT motor_id, min(vibration_x_rms) FROM telemetry GROUP BY motor_id",
            "SELECT count(*) FROM telemetry WHERE vibration_x_rms BETWEEN 4000 AND 5000",
            "SELECT motor_id, count(*) FROM telemetry GROUP BY motor_id HAVING max(vibration_x_rms) > 4000",
            "SELECT sum(CASE WHEN ts = to_timestamp_millis(1001000) THEN vibration_x_rms ELSE 0 END) FROM telemetry",
            "SELECT sum(vibration_x_rms) FILTER (WHERE motor_id = 'M2') FROM telemetry",
            "SELECT count(DISTINCT vibration_x_rms) FROM telemetry",
            "SELECT array_agg(vibration_x_rms) FROM telemetry",
            "SELECT first_value(vibration_x_rms) FROM telemetry",
            "SELECT motor_id, avg(vibration_x_rms) FROM telemetry GROUP BY ROLLUP(motor_id)",
            "SELECT vibration_x_rms, count(*) FROM telemetry GROUP BY vibration_x_rms",
            "SELECT avg(vibration_x_rms) OVER (PARTITION BY motor_id) FROM telemetry",
            "SELECT motor_id FROM telemetry ORDER BY vibration_x_rms DESC LIMIT 1",
            "SELECT a.motor_id, count(*) FROM telemetry a JOIN telemetry b ON a.vibration_x_rms = b.current_a GROUP BY a.motor_id",
            "SELECT motor_id FROM telemetry UNION SELECT CAST(vibration_x_rms AS VARCHAR) FROM telemetry",
            "SELECT avg(v) FROM (SELECT vibration_x_rms AS v FROM telemetry)",
            "SELECT count(*) FROM telemetry WHERE motor_id IN (SELECT motor_id FROM telemetry WHERE vibration_x_rms > 4000)",
            "SELECT CASE WHEN vibration_x_rms > 4000 THEN 'hot' END FROM telemetry",
            "SELECT motor_id, avg(current_a) FROM telemetry GROUP BY motor_id HAVING avg(current_a) > (SELECT max(vibration_x_rms) FROM telemetry)",
        ] {
            match released(&ctx, sql).await {
                Err(SqlError::PermissionDenied(why)) => {
                    assert!(why.contains("vibration_x_rms") || why.contains("current_a"), "{sql}: {why}")
                }
                Err(other) => panic!("{sql}: refused for another reason: {other}"),
                Ok(out) => panic!("{sql}: answered:\n{}", shown(&out)),
            }
        }
    }
}
