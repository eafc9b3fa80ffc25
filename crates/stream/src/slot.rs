//! A continuous query's input relation: the windows that just closed, put into the slot before
//! each run and read when the plan executes (not when it is planned), so a query is planned
//! physically once, at registration, and its plan runs again on each batch of closed windows.
//!
//! The scan maps the relation's columns onto the batch's by name when it executes
//! ([`crate::tables::memory_scan`]): the windows may carry more columns over time (a window
//! operator widens what it keeps when another query is added). Statistics are unknown, so
//! the planner never folds a plan around the (empty) slot it saw at registration.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};

use crate::tables::memory_scan;

type Batches = Arc<Mutex<Vec<RecordBatch>>>;

/// The relation a continuous query reads: empty between runs.
#[derive(Debug)]
pub struct WindowSlot {
    schema: SchemaRef,
    batches: Batches,
}

impl WindowSlot {
    /// An empty slot of `schema` (the relation's full schema; batches may hold a subset of
    /// its columns, as long as they hold those a plan reads).
    pub fn new(schema: SchemaRef) -> Arc<Self> {
        Arc::new(Self { schema, batches: Arc::default() })
    }

    /// Puts the input of the next run in (replacing what was there).
    pub fn put(&self, batches: Vec<RecordBatch>) {
        *self.batches.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = batches;
    }

    /// Empties the slot (after a run, so its windows are not kept alive).
    pub fn clear(&self) {
        self.put(Vec::new());
    }
}

#[async_trait]
impl TableProvider for WindowSlot {
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
        let output = Arc::new(match projection {
            Some(p) => self.schema.project(p)?,
            None => self.schema.as_ref().clone(),
        });
        let properties = PlanProperties::new(
            EquivalenceProperties::new(output),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(SlotScanExec {
            table: self.schema.clone(),
            projection: projection.cloned(),
            batches: self.batches.clone(),
            properties: Arc::new(properties),
        }))
    }
}

/// Scans a [`WindowSlot`]'s batches as they are when it executes.
#[derive(Debug)]
struct SlotScanExec {
    table: SchemaRef,
    projection: Option<Vec<usize>>,
    batches: Batches,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for SlotScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SlotScanExec: projection={:?}", self.projection)
    }
}

impl ExecutionPlan for SlotScanExec {
    fn name(&self) -> &'static str {
        "SlotScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self) // a leaf
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let batches = self.batches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        memory_scan(batches, &self.table, self.projection.as_ref())?.execute(partition, context)
    }
}
