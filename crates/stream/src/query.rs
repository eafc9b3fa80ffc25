//! A registered continuous query: its DataFusion context, its logical plan (checked at
//! registration), and how to read its output.
//!
//! Each query has its own `SessionContext` with one partition (the engine parallelises across
//! shards, not inside a query), the anomaly functions, and the window relation
//! [`WINDOW_TABLE`], which reads whatever closed windows are handed to [`ContinuousQuery::run`].
//! The logical plan is built once; each run plans it physically (cheap next to the data) so that
//! no operator state leaks from one run to the next. Anomaly-function state lives in the plan's
//! function instances and so carries across runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::DFSchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use tessera_core::WindowSpec;

use crate::aggregate::AggSpec;
use crate::grammar::{self, QueryDef, WINDOW_TABLE};
use crate::preagg::{self, Rewritten};
use crate::schema::windowed_schema;
use crate::slot::WindowSlot;
use crate::{StreamError, anomaly};

/// Where the engine finds what it needs in a query's output.
#[derive(Debug, Clone)]
pub struct OutputLayout {
    /// The output schema.
    pub schema: SchemaRef,
    /// `motor_id` (text).
    pub motor: usize,
    /// `window_start` (timestamp ms).
    pub window_start: usize,
    /// `window_end`, if selected.
    pub window_end: Option<usize>,
    /// `score` (numeric), if selected.
    pub score: Option<usize>,
    /// Other numeric columns: the window's features.
    pub features: Vec<usize>,
}

impl OutputLayout {
    fn of(def: &QueryDef, schema: &DFSchemaRef) -> Result<Self, StreamError> {
        let schema: SchemaRef = Arc::new(schema.as_arrow().clone());
        let err = |message: String| StreamError::Output { query: def.name.clone(), message };
        let find = |name: &str| schema.fields().iter().position(|f| f.name() == name);
        let motor = find("motor_id").ok_or_else(|| err("the output must have a motor_id column".into()))?;
        if !matches!(schema.field(motor).data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return Err(err(format!("motor_id must be text, not {}", schema.field(motor).data_type())));
        }
        let is_ts = |i: usize| matches!(schema.field(i).data_type(), DataType::Timestamp(TimeUnit::Millisecond, _));
        let window_start = find("window_start").filter(|&i| is_ts(i)).ok_or_else(|| {
            err("the output must have the window's window_start column (GROUP BY motor_id, window_start)".into())
        })?;
        let window_end = find("window_end").filter(|&i| is_ts(i));
        let score = find("score");
        if let Some(i) = score
            && !schema.field(i).data_type().is_numeric()
        {
            return Err(err(format!("score must be numeric, not {}", schema.field(i).data_type())));
        }
        if def.alerts.is_some() && score.is_none() {
            return Err(err("alert options (WITH open_above ...) need a numeric `score` column in the output".into()));
        }
        let features = (0..schema.fields().len())
            .filter(|&i| Some(i) != score && schema.field(i).data_type().is_numeric())
            .collect();
        Ok(Self { schema, motor, window_start, window_end, score, features })
    }
}

/// The columns of [`WINDOW_TABLE`] that an optimised plan scans (all, where a scan has no
/// projection), subqueries included.
fn window_columns(plan: &LogicalPlan) -> Result<Vec<usize>, DataFusionError> {
    let width = windowed_schema().fields().len();
    let mut columns = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.table() == WINDOW_TABLE
        {
            match &scan.projection {
                Some(p) => columns.extend(p.iter().copied()),
                None => columns.extend(0..width),
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(columns.into_iter().collect())
}

/// A continuous query ready to run on closed windows.
pub struct ContinuousQuery {
    def: QueryDef,
    ctx: SessionContext,
    slot: Arc<WindowSlot>,
    /// The optimised plan's physical plan (made once; it reads the slot as it runs).
    physical: Arc<dyn ExecutionPlan>,
    layout: OutputLayout,
    /// The window relation's columns the plan reads (indices into [`windowed_schema`]).
    input_columns: Vec<usize>,
    /// The plan over pre-aggregated windows, where the query has that shape, and its
    /// physical plan.
    preaggregated: Option<(Rewritten, Arc<dyn ExecutionPlan>)>,
    /// The query's anomaly calls, in plan order; both plans share them (and their state).
    anomaly_calls: Vec<Arc<ScalarUDF>>,
}

impl std::fmt::Debug for ContinuousQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinuousQuery").field("def", &self.def).finish()
    }
}

impl ContinuousQuery {
    /// Parses and plans a `CREATE CONTINUOUS QUERY` statement. Grammar mistakes and anything
    /// DataFusion rejects (unknown columns or functions, type errors) fail here, with
    /// DataFusion's error as the source ([`StreamError::Sql`]); an output the engine cannot
    /// read is [`StreamError::Output`].
    pub async fn register(sql: &str) -> Result<Self, StreamError> {
        let def = grammar::parse(sql)?;
        let sql_err = |source: DataFusionError| StreamError::Sql { query: def.name.clone(), source };
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        anomaly::register_all(&ctx);
        let slot = WindowSlot::new(windowed_schema());
        ctx.register_table(WINDOW_TABLE, slot.clone()).map_err(sql_err)?;
        let statement = DfStatement::Statement(Box::new(SqlStatement::Query(def.select.clone())));
        let plan = ctx.state().statement_to_plan(statement).await.map_err(sql_err)?;
        let (plan, anomaly_calls) = anomaly::instantiate(plan).map_err(sql_err)?;
        // Plan it physically too: type coercion and function checks happen there.
        ctx.state().create_physical_plan(&plan).await.map_err(sql_err)?;
        let layout = OutputLayout::of(&def, plan.schema())?;
        let optimized = ctx.state().optimize(&plan).map_err(sql_err)?;
        let input_columns = window_columns(&optimized).map_err(sql_err)?;
        let preaggregated = match def.window {
            WindowSpec::Session { .. } => None, // sessions merge; they keep rows
            _ => preagg::rewrite(&optimized).map_err(sql_err)?,
        };
        // Runs execute the optimised plans' physical plans, made here once: the slots are
        // read when a plan executes (crate::slot), so neither is planned again per run.
        let state = ctx.state();
        let preaggregated = match preaggregated {
            Some(mut p) => {
                p.plan = state.optimize(&p.plan).map_err(sql_err)?;
                let physical = state.query_planner().create_physical_plan(&p.plan, &state).await.map_err(sql_err)?;
                Some((p, physical))
            }
            None => None,
        };
        let physical = state.query_planner().create_physical_plan(&optimized, &state).await.map_err(sql_err)?;
        Ok(Self { def, ctx, slot, physical, layout, input_columns, preaggregated, anomaly_calls })
    }

    /// The aggregates this query reads if it runs on pre-aggregated windows (see
    /// [`crate::preagg`]); `None` if it reads raw rows.
    pub fn aggregates(&self) -> Option<&[AggSpec]> {
        self.preaggregated.as_ref().map(|(p, _)| &p.specs[..])
    }

    /// The window relation's columns this query reads, as indices into [`windowed_schema`]:
    /// the window operator gathers only these.
    pub fn input_columns(&self) -> &[usize] {
        &self.input_columns
    }

    /// The per-motor state of each anomaly call, for a checkpoint.
    pub(crate) fn anomaly_state(&self, include: &dyn Fn(&str) -> bool) -> Result<Vec<anomaly::CallState>, StreamError> {
        self.anomaly_calls.iter().map(|c| anomaly::call_state(c, include)).collect()
    }

    /// Restores [`Self::anomaly_state`] into the same query, registered again.
    pub(crate) fn restore_anomaly_state(
        &self,
        states: Vec<anomaly::CallState>,
        merge: bool,
    ) -> Result<(), StreamError> {
        if states.len() != self.anomaly_calls.len() {
            return Err(StreamError::Checkpoint(format!(
                "query {}: {} anomaly call states for {} calls",
                self.def.name,
                states.len(),
                self.anomaly_calls.len()
            )));
        }
        self.anomaly_calls.iter().zip(states).try_for_each(|(c, s)| anomaly::restore_call(c, s, merge))
    }

    /// Forgets the anomaly state of the motors `drop` accepts.
    pub(crate) fn drop_motors(&self, drop: &dyn Fn(&str) -> bool) -> Result<(), StreamError> {
        self.anomaly_calls.iter().try_for_each(|c| anomaly::drop_call_motors(c, drop))
    }

    /// The parsed definition.
    pub fn def(&self) -> &QueryDef {
        &self.def
    }

    /// Where the output's columns are.
    pub fn layout(&self) -> &OutputLayout {
        &self.layout
    }

    /// Runs the query over closed windows (in [`windowed_schema`], or a projection of it that
    /// holds at least [`Self::input_columns`]).
    ///
    /// A query with [`Self::aggregates`] runs on pre-aggregated windows instead: one row per
    /// window in [`crate::schema::aggregated_schema`] holding at least its aggregates.
    pub async fn run(&self, windows: RecordBatch) -> Result<Vec<RecordBatch>, StreamError> {
        let (slot, physical) = match &self.preaggregated {
            Some((p, physical)) => (&p.table, physical),
            None => (&self.slot, &self.physical),
        };
        slot.put(vec![windows]);
        // A plan that ran keeps no state into the next run (reset as DataFusion does before
        // it runs a plan again).
        let result = match reset_plan_states(physical.clone()) {
            Ok(plan) => collect(plan, self.ctx.task_ctx()).await,
            Err(e) => Err(e),
        };
        slot.clear();
        result.map_err(|source| StreamError::Run { query: self.def.name.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(select: &str) -> String {
        format!(
            "CREATE CONTINUOUS QUERY bad AS SELECT {select} FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') GROUP BY motor_id, window_start"
        )
    }

    /// DataFusion's error is kept as the source; the message is its text without a backtrace.
    #[tokio::test]
    async fn a_rejected_query_keeps_datafusions_error() {
        let e = ContinuousQuery::register(&query("motor_id, window_start, avg(nope) AS x")).await.unwrap_err();
        let StreamError::Sql { query, source } = &e else { panic!("{e:?}") };
        assert_eq!(query, "bad");
        assert!(matches!(source.find_root(), DataFusionError::SchemaError(..)), "{source:?}");
        assert_eq!(e.to_string(), format!("continuous query bad: {}", source.strip_backtrace()));
    }

    /// An output the engine cannot read is this crate's complaint, not DataFusion's.
    #[tokio::test]
    async fn an_unreadable_output_says_what_is_missing() {
        let e = ContinuousQuery::register(&query("motor_id, count(*) AS n")).await.unwrap_err();
        assert!(
            matches!(&e, StreamError::Output { query, message } if query == "bad" && message.contains("window_start")),
            "{e:?}"
        );
    }
}
