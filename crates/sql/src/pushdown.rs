//! Partial aggregates at each site (or node): an optimizer rule for aggregates over `fleet`
//! tables and over a site's tables spread over its nodes ([`crate::site`]); below, "site"
//! stands for either.
//!
//! `Aggregate(TableScan(fleet.t))` (with filters and column-only projections between) whose aggregates all decompose (`count`, `sum`,
//! `min`, `max`, `avg` without DISTINCT, FILTER or ORDER BY) becomes
//!
//! ```text
//! Projection (the original output names)
//!   Aggregate (merge: sum of counts and sums, min of mins, max of maxes,
//!              sum of sums / sum of counts for avg)
//!     TableScan (one partial row per group and site: each site runs
//!                SELECT keys, partial aggregates FROM public.t WHERE … GROUP BY keys)
//! ```
//!
//! so raw rows never cross the network for an aggregate, and the merge works on a handful of
//! rows per site. Each site releases its partials as it releases any aggregate
//! ([`crate::release`]): of a column above the caller's allowance, only count/sum/avg of groups
//! that meet the site's policy, the smaller groups dropped at that site. Anything else (DISTINCT, medians, joins under the aggregate) is left to the
//! plain `fleet` scan: filtered rows from each site, aggregated on the coordinator.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, TableReference};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableType, provider_as_source, source_as_provider};
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, cast};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::Catalog;
use crate::federation::FLEET;
use crate::fleet::{FleetTable, Spread, fragments_as};
use crate::identity::Identity;
use crate::sql_text::{quote, to_sql};

/// The rule (see the module docs).
#[derive(Debug, Default)]
pub struct PushAggregatesToSites;

impl OptimizerRule for PushAggregatesToSites {
    fn name(&self) -> &str {
        "push_aggregates_to_sites"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else { return Ok(Transformed::no(plan)) };
        match split(aggregate)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// How one original aggregate is computed from the partial columns.
enum Merge {
    /// `sum`, `min` or `max` of one partial column.
    Same(fn(Expr) -> Expr, usize),
    /// `sum(sums) / sum(counts)`.
    Average { sums: usize, counts: usize },
}

fn split(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    if aggregate.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
        return Ok(None);
    }
    // Down to the scan through filters and projections that only pass columns on.
    let mut predicates = Vec::new();
    let mut node = aggregate.input.as_ref();
    let scan = loop {
        match node {
            LogicalPlan::TableScan(scan) => break scan,
            LogicalPlan::Filter(filter) => {
                predicates.push(&filter.predicate);
                node = filter.input.as_ref();
            }
            LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
                node = p.input.as_ref()
            }
            _ => return Ok(None),
        }
    };
    let Ok(provider) = source_as_provider(&scan.source) else { return Ok(None) };
    let Some(fleet) = (provider.as_ref() as &dyn Any).downcast_ref::<FleetTable>() else { return Ok(None) };

    // The fragment's select list and schema: group keys g0.., partial aggregates p0...
    let mut select = Vec::new();
    let mut fields = Vec::new();
    let mut keys = Vec::new();
    for (j, key) in aggregate.group_expr.iter().enumerate() {
        let Ok(sql) = to_sql(key) else { return Ok(None) };
        keys.push(sql.clone());
        select.push(format!("{sql} AS g{j}"));
        fields.push(Field::new(format!("g{j}"), aggregate.schema.field(j).data_type().clone(), true));
    }
    let mut merges = Vec::new();
    for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
        let inner = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(function) = inner else { return Ok(None) };
        let params = &function.params;
        if params.distinct || params.filter.is_some() || !params.order_by.is_empty() || params.args.len() > 1 {
            return Ok(None);
        }
        let out_type = aggregate.schema.field(aggregate.group_expr.len() + i).data_type().clone();
        let mut partial = |sql: String, data_type: DataType| {
            let index = fields.len();
            select.push(format!("{sql} AS p{index}"));
            fields.push(Field::new(format!("p{index}"), data_type, true));
            index
        };
        let merge = match function.func.name() {
            "count" => Merge::Same(sum, partial(to_sql(inner)?, DataType::Int64)),
            "sum" => Merge::Same(sum, partial(to_sql(inner)?, out_type)),
            "min" => Merge::Same(min, partial(to_sql(inner)?, out_type)),
            "max" => Merge::Same(max, partial(to_sql(inner)?, out_type)),
            "avg" if out_type == DataType::Float64 => {
                let arg = to_sql(&params.args[0])?;
                let sums = partial(format!("CAST(sum({arg}) AS DOUBLE)"), DataType::Float64);
                let counts = partial(format!("count({arg})"), DataType::Int64);
                Merge::Average { sums, counts }
            }
            _ => return Ok(None),
        };
        merges.push(merge);
    }

    let mut sql = format!(
        "SELECT {} FROM {}.{}",
        select.join(", "),
        fleet.spread().fragment_schema(),
        quote(scan.table_name.table())
    );
    let mut conditions: Vec<String> = scan.filters.iter().map(to_sql).collect::<Result<_>>()?;
    for p in predicates {
        conditions.push(to_sql(p)?);
    }
    if !conditions.is_empty() {
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    if !keys.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", keys.join(", ")));
    }

    let partials = Arc::new(Partials {
        sql,
        schema: Arc::new(Schema::new(fields)),
        catalog: fleet.catalog(),
        who: fleet.who().clone(),
        spread: fleet.spread(),
    });
    // In the `fleet` schema: what it holds was released by each site.
    let partials_table = TableReference::partial(FLEET, "site_partials");
    let scan = LogicalPlanBuilder::scan(partials_table.clone(), provider_as_source(partials), None)?.build()?;
    let column = |name: String| Expr::Column(Column::new(Some(partials_table.clone()), name));
    let group: Vec<Expr> = (0..aggregate.group_expr.len()).map(|j| column(format!("g{j}"))).collect();
    let partial = |index: usize| column(format!("p{index}"));
    let merged: Vec<Expr> = merges
        .iter()
        .map(|m| match *m {
            Merge::Same(f, index) => f(partial(index)),
            Merge::Average { sums, counts } => sum(partial(sums)) / cast(sum(partial(counts)), DataType::Float64),
        })
        .collect();
    let merged = LogicalPlanBuilder::from(scan).aggregate(group, merged)?.build()?;
    let merged_schema = merged.schema().clone();
    let outputs: Vec<Expr> = aggregate
        .schema
        .iter()
        .enumerate()
        .map(|(k, (qualifier, field))| {
            let (q, f) = merged_schema.qualified_field(k);
            Expr::Column(Column::new(q.cloned(), f.name())).alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    Ok(Some(LogicalPlanBuilder::from(merged).project(outputs)?.build()?))
}

/// The partial aggregates of every site for one `fleet` aggregate (fetched at scan).
struct Partials {
    sql: String,
    schema: SchemaRef,
    catalog: Arc<Catalog>,
    who: Identity,
    spread: Spread,
}

impl std::fmt::Debug for Partials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partials").field("sql", &self.sql).finish()
    }
}

#[async_trait]
impl TableProvider for Partials {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = fragments_as(&self.catalog, &self.who, &self.sql, &self.schema, self.spread).await?;
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?)
    }
}
