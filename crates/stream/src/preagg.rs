//! Incremental window aggregates: for the common query shape — simple aggregates of telemetry
//! channels grouped by motor and window — the window operator folds each reading into a few
//! running numbers per window instead of keeping the reading, and the query runs on one row
//! per window.
//!
//! [`rewrite`] recognises the shape in a query's optimised plan (an `Aggregate` straight over
//! the window relation, grouped by `motor_id`, `window_start` and optionally `site_id` and
//! `window_end`, whose aggregates are `count`, `sum`, `avg`, `min`, `max`, `var`/`stddev`
//! (sample or population) of plain channel columns, without `DISTINCT`, `FILTER` or
//! `ORDER BY`) and swaps the window relation for the pre-aggregated one ([`AggSpec::name`]
//! columns, one row per window). Each aggregate becomes `max(<its pre-aggregated column>)`
//! under the original name, so the rest of the plan (anomaly functions included) is
//! untouched. Any other shape keeps the raw-row path.
//!
//! The aggregates themselves ([`AggSpec`], and the running [`crate::aggregate::ColumnStats`]
//! the window operator keeps) are in [`crate::aggregate`]; the relation's schema is
//! [`aggregated_schema`].

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DataFusionError};
use datafusion::datasource::provider_as_source;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder};

use crate::aggregate::{AggKind, AggSpec};
use crate::grammar::WINDOW_TABLE;
use crate::schema::{KEY_COLUMNS, aggregated_schema, windowed_schema};
use crate::slot::WindowSlot;

/// A query plan rewritten to read pre-aggregated windows.
#[derive(Debug)]
pub struct Rewritten {
    /// The plan over the pre-aggregated relation.
    pub plan: LogicalPlan,
    /// The aggregates it reads.
    pub specs: Vec<AggSpec>,
    /// Its pre-aggregated relation (fed before each run).
    pub table: Arc<WindowSlot>,
}

/// Rewrites an optimised plan to read pre-aggregated windows, if it has the shape described in
/// the module doc; `None` otherwise.
pub fn rewrite(plan: &LogicalPlan) -> Result<Option<Rewritten>, DataFusionError> {
    let mut scans = 0;
    plan.apply_with_subqueries(|node| {
        if matches!(node, LogicalPlan::TableScan(s) if s.table_name.table() == WINDOW_TABLE) {
            scans += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if scans != 1 {
        return Ok(None);
    }
    let mut found: Option<(Vec<AggSpec>, Arc<WindowSlot>)> = None;
    let rewritten = plan.clone().transform_up(|node| {
        let LogicalPlan::Aggregate(agg) = &node else {
            return Ok(Transformed::no(node));
        };
        let LogicalPlan::TableScan(scan) = agg.input.as_ref() else {
            return Ok(Transformed::no(node));
        };
        if scan.table_name.table() != WINDOW_TABLE || !scan.filters.is_empty() || scan.fetch.is_some() {
            return Ok(Transformed::no(node));
        }
        let Some(specs) = aggregate_specs(agg) else {
            return Ok(Transformed::no(node));
        };
        let unique: Vec<AggSpec> = specs.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        let table = WindowSlot::new(aggregated_schema(&unique));
        let input = LogicalPlanBuilder::scan(WINDOW_TABLE, provider_as_source(table.clone()), None)?.build()?;
        let aggr_expr = agg
            .aggr_expr
            .iter()
            .zip(&specs)
            .map(|(e, s)| {
                max(Expr::Column(Column::new(Some(WINDOW_TABLE), s.name()))).alias(e.schema_name().to_string())
            })
            .collect();
        let new = Aggregate::try_new(Arc::new(input), agg.group_expr.clone(), aggr_expr)?;
        found = Some((unique, table));
        Ok(Transformed::yes(LogicalPlan::Aggregate(new)))
    })?;
    let Some((specs, table)) = found else {
        return Ok(None);
    };
    // Parents of the new aggregate keep their expressions; their schemas are recomputed.
    let plan = rewritten.data.transform_up(|node| Ok(Transformed::yes(node.recompute_schema()?)))?.data;
    Ok(Some(Rewritten { plan, specs, table }))
}

/// The aggregate's specs, one per aggregate expression, if every one is supported and it is
/// grouped by motor and window.
fn aggregate_specs(agg: &Aggregate) -> Option<Vec<AggSpec>> {
    let schema = windowed_schema();
    let mut keys = BTreeSet::new();
    for g in &agg.group_expr {
        let Expr::Column(c) = g else { return None };
        if !KEY_COLUMNS.contains(&c.name.as_str()) {
            return None;
        }
        keys.insert(c.name.as_str());
    }
    if !keys.contains("motor_id") || !keys.contains("window_start") {
        return None;
    }
    agg.aggr_expr
        .iter()
        .map(|e| {
            let Expr::AggregateFunction(AggregateFunction { func, params }) = e else { return None };
            if params.distinct
                || params.filter.is_some()
                || !params.order_by.is_empty()
                || params.null_treatment.is_some()
                || params.args.len() != 1
            {
                return None;
            }
            let channel = || match &params.args[0] {
                Expr::Column(c) => {
                    schema.index_of(&c.name).ok().filter(|&i| schema.field(i).data_type() == &DataType::Float64)
                }
                _ => None,
            };
            let kind = match (func.name(), &params.args[0]) {
                ("count", Expr::Literal(v, _)) if !v.is_null() => {
                    return Some(AggSpec { kind: AggKind::CountRows, column: 0 });
                }
                ("count", _) => AggKind::Count,
                ("sum", _) => AggKind::Sum,
                ("avg", _) => AggKind::Avg,
                ("min", _) => AggKind::Min,
                ("max", _) => AggKind::Max,
                ("var", _) => AggKind::VarSamp,
                ("var_pop", _) => AggKind::VarPop,
                ("stddev", _) => AggKind::StddevSamp,
                ("stddev_pop", _) => AggKind::StddevPop,
                _ => return None,
            };
            Some(AggSpec { kind, column: channel()? })
        })
        .collect()
}
