//! The incremental aggregates' vocabulary, shared by the window operator (which computes them
//! as readings arrive) and the plan rewrite of [`crate::preagg`] (which finds them in a query):
//! what is computed ([`AggKind`], [`AggSpec`]) and the running numbers it is computed from
//! ([`ColumnStats`]).
//!
//! [`ColumnStats`] folds values in arrival order with the same arithmetic as DataFusion's
//! accumulators (sequential sums; Welford's update for the variance), so the pre-aggregated
//! and the raw-row paths give the same bits; the engine's tests check that.

use datafusion::arrow::array::{Array, Float64Array};
use datafusion::arrow::datatypes::DataType;
use tessera_core::telemetry_schema;

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
        let column = || telemetry_schema().field(self.column).name().clone();
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
