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
//! [`ColumnStats`] folds values in arrival order with the same arithmetic as DataFusion's
//! accumulators (sequential sums; Welford's update for the variance), so both paths give the
//! same bits; the engine's tests check that.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Float64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DataFusionError};
use datafusion::datasource::provider_as_source;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder};

use crate::grammar::WINDOW_TABLE;
use crate::tables::BoundedTable;
use crate::windowing::{ts_type, windowed_schema};

/// An aggregate the window operator computes incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AggKind {
    /// `count(*)`: rows.
    CountRows,
    /// `count(column)`: non-null values.
    Count,
    /// `sum(column)`.
    Sum,
    /// `avg(column)`.
    Avg,
    /// `min(column)`.
    Min,
    /// `max(column)`.
    Max,
    /// `var` / `var_samp`.
    VarSamp,
    /// `var_pop`.
    VarPop,
    /// `stddev` / `stddev_samp`.
    StddevSamp,
    /// `stddev_pop`.
    StddevPop,
}

/// One incremental aggregate: a kind over a telemetry column (ignored for `CountRows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AggSpec {
    /// What is computed.
    pub kind: AggKind,
    /// The column, as an index into the telemetry schema.
    pub column: usize,
}

impl AggSpec {
    /// The pre-aggregated relation's column name, e.g. `avg(vibration_x_rms)`.
    pub fn name(&self) -> String {
        let column = || windowed_schema().field(self.column).name().clone();
        let f = match self.kind {
            AggKind::CountRows => return "count(*)".into(),
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Avg => "avg",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::VarSamp => "var_samp",
            AggKind::VarPop => "var_pop",
            AggKind::StddevSamp => "stddev_samp",
            AggKind::StddevPop => "stddev_pop",
        };
        format!("{f}({})", column())
    }

    /// The output type: Int64 for counts, Float64 otherwise.
    pub fn data_type(&self) -> DataType {
        match self.kind {
            AggKind::CountRows | AggKind::Count => DataType::Int64,
            _ => DataType::Float64,
        }
    }

    /// True if the variance moments are needed.
    pub fn needs_moments(&self) -> bool {
        matches!(self.kind, AggKind::VarSamp | AggKind::VarPop | AggKind::StddevSamp | AggKind::StddevPop)
    }
}

/// Running statistics of one column in one window.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ColumnStats {
    /// Non-null values seen.
    pub count: u64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

impl Default for ColumnStats {
    fn default() -> Self {
        Self { count: 0, sum: 0.0, min: f64::NAN, max: f64::NAN, mean: 0.0, m2: 0.0 }
    }
}

impl ColumnStats {
    /// Folds in one value (in arrival order); `moments` keeps the variance terms too.
    #[inline]
    pub fn add(&mut self, value: f64, moments: bool) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            if value.total_cmp(&self.min).is_lt() {
                self.min = value;
            }
            if value.total_cmp(&self.max).is_gt() {
                self.max = value;
            }
        }
        self.sum += value;
        self.count += 1;
        if moments {
            // Welford's update, as DataFusion's variance accumulator does it.
            let delta1 = value - self.mean;
            self.mean += delta1 / self.count as f64;
            let delta2 = value - self.mean;
            self.m2 += delta1 * delta2;
        }
    }

    /// Folds in the values at `rows` (in that order, skipping NULLs) of several columns at
    /// once, `stats[k]` taking `columns[k]` (values, whether variance terms are kept): the same
    /// as [`Self::add`] value by value. Going row by row across the columns lets their Welford
    /// updates (a division each, every one waiting for the last) overlap, and the running
    /// numbers stay in registers for the whole run.
    #[inline]
    pub fn add_rows<const N: usize>(stats: &mut [ColumnStats; N], columns: [(&Float64Array, bool); N], rows: &[u32]) {
        let mut local = *stats;
        let raw: [&[f64]; N] = columns.map(|(values, _)| &values.values()[..]);
        let moments: [bool; N] = columns.map(|(_, moments)| moments);
        if columns.iter().all(|(values, _)| values.nulls().is_none()) {
            for &r in rows {
                for k in 0..N {
                    local[k].add(raw[k][r as usize], moments[k]);
                }
            }
        } else {
            for &r in rows {
                for k in 0..N {
                    if columns[k].0.is_valid(r as usize) {
                        local[k].add(raw[k][r as usize], moments[k]);
                    }
                }
            }
        }
        *stats = local;
    }

    /// A floating-point aggregate's value; `None` where SQL gives NULL (and for the counts,
    /// which the window operator reads from [`Self::count`] and the window's row count).
    pub fn f64_value(&self, kind: AggKind) -> Option<f64> {
        let n = self.count;
        match kind {
            AggKind::CountRows | AggKind::Count => None,
            AggKind::Sum => (n > 0).then_some(self.sum),
            AggKind::Avg => (n > 0).then(|| self.sum / n as f64),
            AggKind::Min => (n > 0).then_some(self.min),
            AggKind::Max => (n > 0).then_some(self.max),
            AggKind::VarSamp => (n > 1).then(|| self.m2 / (n - 1) as f64),
            AggKind::VarPop => (n > 0).then(|| self.m2 / n as f64),
            AggKind::StddevSamp => (n > 1).then(|| (self.m2 / (n - 1) as f64).sqrt()),
            AggKind::StddevPop => (n > 0).then(|| (self.m2 / n as f64).sqrt()),
        }
    }
}

/// The key columns of the pre-aggregated relation, before the aggregate columns.
pub const KEY_COLUMNS: [&str; 4] = ["motor_id", "site_id", "window_start", "window_end"];

/// The pre-aggregated relation's schema for `specs`: the key columns, then one column per spec.
pub fn aggregated_schema(specs: &[AggSpec]) -> SchemaRef {
    let mut fields = vec![
        Field::new(KEY_COLUMNS[0], DataType::Utf8, false),
        Field::new(KEY_COLUMNS[1], DataType::Utf8, false),
        Field::new(KEY_COLUMNS[2], ts_type(), false),
        Field::new(KEY_COLUMNS[3], ts_type(), false),
    ];
    fields.extend(specs.iter().map(|s| Field::new(s.name(), s.data_type(), !matches!(s.kind, AggKind::CountRows | AggKind::Count))));
    Arc::new(Schema::new(fields))
}

/// A query plan rewritten to read pre-aggregated windows.
#[derive(Debug)]
pub struct Rewritten {
    /// The plan over the pre-aggregated relation.
    pub plan: LogicalPlan,
    /// The aggregates it reads.
    pub specs: Vec<AggSpec>,
    /// Its pre-aggregated relation (fed before each run).
    pub table: Arc<BoundedTable>,
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
    let mut found: Option<(Vec<AggSpec>, Arc<BoundedTable>)> = None;
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
        let table = BoundedTable::new(aggregated_schema(&unique), usize::MAX);
        let input = LogicalPlanBuilder::scan(WINDOW_TABLE, provider_as_source(table.clone()), None)?.build()?;
        let aggr_expr = agg
            .aggr_expr
            .iter()
            .zip(&specs)
            .map(|(e, s)| max(Expr::Column(Column::new(Some(WINDOW_TABLE), s.name()))).alias(e.schema_name().to_string()))
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
            if params.distinct || params.filter.is_some() || !params.order_by.is_empty() || params.null_treatment.is_some() || params.args.len() != 1 {
                return None;
            }
            let channel = || match &params.args[0] {
                Expr::Column(c) => schema.index_of(&c.name).ok().filter(|&i| schema.field(i).data_type() == &DataType::Float64),
                _ => None,
            };
            let kind = match (func.name(), &params.args[0]) {
                ("count", Expr::Literal(v, _)) if !v.is_null() => return Some(AggSpec { kind: AggKind::CountRows, column: 0 }),
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
