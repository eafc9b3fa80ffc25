//! Anomaly functions for continuous queries, registered in DataFusion as scalar functions whose
//! state carries across windows.
//!
//! Every function takes the motor key and the window start first, then the window's value and
//! constant parameters: `zscore(motor_id, window_start, avg(vibration_x_rms), 30)`. The engine
//! gives each call in a query its own state (see [`instantiate`]), keyed by motor; a motor's rows
//! are scored in window order whatever order DataFusion hands them over in. A window at or
//! before the last one a motor was scored for (a replay) is scored against the current state
//! without changing it, so replays do not skew the baseline.
//!
//! | function | parameters | score |
//! |---|---|---|
//! | `zscore(key, t, x, n [, gate])` | `n` ≥ 2 trailing windows; `gate` > 0 | `(x − mean) / stddev_samp` of the previous `n` values; a value scoring beyond ±`gate` is kept out of the baseline |
//! | `ewma_dev(key, t, x, alpha)` | 0 < `alpha` ≤ 1 | `(x − m) / sqrt(v)` for the exponentially weighted mean `m` and variance `v`, after `ceil(1/alpha)` windows |
//! | `cusum(key, t, x, n, k)` | `n` ≥ 2, `k` ≥ 0 (slack, in standard deviations) | `max(S⁺, S⁻)` of the two-sided CUSUM of the trailing z-score |
//! | `spike(key, t, x, n)` | `n` ≥ 2 | robust z: `(x − median) / (1.4826 · MAD)` of the previous `n` values; positive for a spike, negative for a dip |
//! | `trend_slope(key, t, x, n)` | `n` ≥ 2 | least-squares slope over the last `n` windows, in units per second |
//! | `time_to_threshold(key, t, x, n, limit)` | `n` ≥ 2 | seconds until that fitted line reaches `limit` (remaining useful life); NULL if it moves away |
//! | `hotelling_t2(key, t, make_array(x1, …, xk), n [, gate])` | `n` > k | Hotelling T² of the vector against the previous `n` vectors' mean and covariance; a vector with √T² beyond `gate` stays out of the baseline |
//!
//! All return Float64, NULL until the baseline is full (no score without evidence). A NULL
//! value gives a NULL score and leaves the state alone.

mod detectors;
pub(crate) use detectors::solve;

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Float64Builder};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::cast::{as_float64_array, as_int64_array, as_list_array, as_string_array};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use serde::{Deserialize, Serialize};

use crate::StreamError;
use detectors::{Detector, Ring};

/// The anomaly functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    /// `zscore(key, t, x, n [, gate])`.
    ZScore,
    /// `ewma_dev(key, t, x, alpha)`.
    EwmaDev,
    /// `cusum(key, t, x, n, k)`.
    Cusum,
    /// `spike(key, t, x, n)`.
    Spike,
    /// `trend_slope(key, t, x, n)`.
    TrendSlope,
    /// `time_to_threshold(key, t, x, n, limit)`.
    TimeToThreshold,
    /// `hotelling_t2(key, t, make_array(x1, …), n [, gate])`.
    HotellingT2,
}

impl AnomalyKind {
    /// Every anomaly function.
    pub const ALL: [AnomalyKind; 7] = [
        AnomalyKind::ZScore,
        AnomalyKind::EwmaDev,
        AnomalyKind::Cusum,
        AnomalyKind::Spike,
        AnomalyKind::TrendSlope,
        AnomalyKind::TimeToThreshold,
        AnomalyKind::HotellingT2,
    ];

    /// The SQL name.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::ZScore => "zscore",
            AnomalyKind::EwmaDev => "ewma_dev",
            AnomalyKind::Cusum => "cusum",
            AnomalyKind::Spike => "spike",
            AnomalyKind::TrendSlope => "trend_slope",
            AnomalyKind::TimeToThreshold => "time_to_threshold",
            AnomalyKind::HotellingT2 => "hotelling_t2",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Names of the required and the optional constant parameters after `(key, t, x)`.
    fn params(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            AnomalyKind::ZScore | AnomalyKind::HotellingT2 => (&["n"], &["gate"]),
            AnomalyKind::EwmaDev => (&["alpha"], &[]),
            AnomalyKind::Cusum => (&["n", "k"], &[]),
            AnomalyKind::Spike | AnomalyKind::TrendSlope => (&["n"], &[]),
            AnomalyKind::TimeToThreshold => (&["n", "limit"], &[]),
        }
    }

    fn usage(self) -> String {
        let (req, opt) = self.params();
        let x = if self == AnomalyKind::HotellingT2 { "make_array(x1, ...)" } else { "x" };
        let opt: String = opt.iter().map(|p| format!(" [, {p}]")).collect();
        format!("{}(key, t, {x}, {}{opt})", self.name(), req.join(", "))
    }

    /// A fresh per-motor state for these parameter values, or why they are unusable.
    fn detector(self, p: &[f64], dims: usize) -> std::result::Result<Detector, String> {
        let n = || -> std::result::Result<usize, String> {
            let n = p[0];
            if n.fract() != 0.0 || !(2.0..=100_000.0).contains(&n) {
                return Err(format!("n must be a whole number of windows in 2..=100000, got {n}"));
            }
            Ok(n as usize)
        };
        let gate = |i: usize| -> std::result::Result<Option<f64>, String> {
            match p.get(i) {
                Some(g) if *g <= 0.0 => Err(format!("gate must be positive, got {g}")),
                g => Ok(g.copied()),
            }
        };
        Ok(match self {
            AnomalyKind::ZScore => Detector::ZScore { ring: Ring::new(n()?), gate: gate(1)? },
            AnomalyKind::EwmaDev => {
                let alpha = p[0];
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return Err(format!("alpha must be in (0, 1], got {alpha}"));
                }
                Detector::Ewma { alpha, count: 0, mean: 0.0, var: 0.0 }
            }
            AnomalyKind::Cusum => {
                if p[1] < 0.0 {
                    return Err(format!("k must not be negative, got {}", p[1]));
                }
                Detector::Cusum { ring: Ring::new(n()?), k: p[1], high: 0.0, low: 0.0 }
            }
            AnomalyKind::Spike => Detector::Spike { ring: Ring::new(n()?) },
            AnomalyKind::TrendSlope => Detector::Trend { ring: Ring::new(n()?), threshold: None },
            AnomalyKind::TimeToThreshold => Detector::Trend { ring: Ring::new(n()?), threshold: Some(p[1]) },
            AnomalyKind::HotellingT2 => {
                let n = n()?;
                if n <= dims {
                    return Err(format!("n ({n}) must exceed the number of channels ({dims})"));
                }
                Detector::Hotelling { ring: Ring::new(n), gate: gate(1)? }
            }
        })
    }
}

/// Registers every anomaly function in `ctx` under its SQL name, so queries plan. The planned
/// calls are unusable until [`instantiate`] gives each its own state.
pub fn register_all(ctx: &SessionContext) {
    for kind in AnomalyKind::ALL {
        ctx.register_udf(ScalarUDF::new_from_impl(AnomalyUdf::placeholder(kind)));
    }
}

/// Gives every anomaly call in `plan` its own state, checking its constant parameters.
/// Returns the plan and the calls, in plan order (the same for the same statement, so a
/// checkpoint's call states line up with a re-registered query's calls).
pub fn instantiate(plan: LogicalPlan) -> Result<(LogicalPlan, Vec<Arc<ScalarUDF>>)> {
    let mut calls = Vec::new();
    let plan = plan
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::ScalarFunction(call) => match AnomalyKind::from_name(call.func.name()) {
                        Some(kind) => {
                            let udf = Arc::new(ScalarUDF::new_from_impl(AnomalyUdf::for_call(kind, &call.args)?));
                            calls.push(udf.clone());
                            Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(udf, call.args))))
                        }
                        None => Ok(Transformed::no(Expr::ScalarFunction(call))),
                    },
                    other => Ok(Transformed::no(other)),
                })
            })
        })?
        .data;
    Ok((plan, calls))
}

/// One anomaly call's per-motor state in a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CallState {
    /// The function, its constant parameters and vector width: a state restores only into
    /// the same call.
    function: String,
    params: Vec<f64>,
    dims: u64,
    /// (motor, last window scored, detector), sorted by motor.
    motors: Vec<(String, i64, Detector)>,
}

fn anomaly_impl(call: &ScalarUDF) -> Result<&AnomalyUdf, StreamError> {
    call.inner()
        .downcast_ref::<AnomalyUdf>()
        .ok_or_else(|| StreamError::Checkpoint(format!("{} is not an anomaly function", call.name())))
}

/// The per-motor state of an anomaly call made by [`instantiate`], of the motors `include`
/// accepts.
pub(crate) fn call_state(call: &ScalarUDF, include: &dyn Fn(&str) -> bool) -> Result<CallState, StreamError> {
    let udf = anomaly_impl(call)?;
    let states = udf.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut motors: Vec<(String, i64, Detector)> =
        states.iter().filter(|(m, _)| include(m)).map(|(m, s)| (m.to_string(), s.last_t, s.detector.clone())).collect();
    motors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(CallState { function: udf.kind.name().to_string(), params: udf.params.clone(), dims: udf.dims as u64, motors })
}

/// Restores [`call_state`]'s state into the same call of a re-registered query: in place of
/// everything it holds, or with `merge`, added to it (a moved partition's motors; a motor
/// already there gets the restored state).
pub(crate) fn restore_call(call: &ScalarUDF, state: CallState, merge: bool) -> Result<(), StreamError> {
    let udf = anomaly_impl(call)?;
    let same = state.function == udf.kind.name()
        && state.dims == udf.dims as u64
        && state.params.len() == udf.params.len()
        && state.params.iter().zip(&udf.params).all(|(a, b)| a.to_bits() == b.to_bits());
    if !same {
        return Err(StreamError::Checkpoint(format!(
            "anomaly state of {}({:?}) does not fit {}({:?})",
            state.function,
            state.params,
            udf.kind.name(),
            udf.params
        )));
    }
    let mut states = udf.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !merge {
        states.clear();
    }
    states.extend(
        state.motors.into_iter().map(|(m, last_t, detector)| (crate::ids::shared(&m), MotorState { detector, last_t })),
    );
    Ok(())
}

/// Forgets the per-motor state of the motors `drop` accepts.
pub(crate) fn drop_call_motors(call: &ScalarUDF, drop: &dyn Fn(&str) -> bool) -> Result<(), StreamError> {
    let udf = anomaly_impl(call)?;
    let mut states = udf.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    states.retain(|m, _| !drop(m));
    Ok(())
}

/// The constant a parameter argument must be.
fn constant(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Float64(Some(x)) => Some(*x),
            ScalarValue::Float32(Some(x)) => Some(*x as f64),
            other => other.cast_to(&DataType::Float64).ok().and_then(|v| match v {
                ScalarValue::Float64(x) => x,
                _ => None,
            }),
        },
        Expr::Negative(inner) => constant(inner).map(|x| -x),
        Expr::Cast(c) => constant(&c.expr),
        _ => None,
    }
}

/// Source of instance numbers, so that two calls never compare equal (and are never merged).
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// One motor's state in one call.
#[derive(Debug)]
struct MotorState {
    detector: Detector,
    last_t: i64,
}

/// An anomaly function call with its per-motor state.
#[derive(Debug)]
struct AnomalyUdf {
    kind: AnomalyKind,
    signature: Signature,
    /// 0 for the placeholder registered for planning.
    instance: u64,
    params: Vec<f64>,
    /// Channels of the vector (`hotelling_t2`), else 1.
    dims: usize,
    /// By the motor's shared id ([`crate::ids`]).
    states: Mutex<crate::ids::MotorTable<MotorState>>,
}

impl PartialEq for AnomalyUdf {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.instance == other.instance
    }
}

impl Eq for AnomalyUdf {}

impl Hash for AnomalyUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.instance.hash(state);
    }
}

impl AnomalyUdf {
    fn placeholder(kind: AnomalyKind) -> Self {
        Self {
            kind,
            signature: Signature::user_defined(Volatility::Volatile),
            instance: 0,
            params: Vec::new(),
            dims: 1,
            states: Mutex::new(crate::ids::MotorTable::new()),
        }
    }

    fn for_call(kind: AnomalyKind, args: &[Expr]) -> Result<Self> {
        let (req, opt) = kind.params();
        if args.len() < 3 + req.len() || args.len() > 3 + req.len() + opt.len() {
            return plan_err!("{} takes {} arguments: {}", kind.name(), 3 + req.len(), kind.usage());
        }
        let names = req.iter().chain(opt);
        let mut params = Vec::new();
        for (arg, name) in args[3..].iter().zip(names) {
            match constant(arg) {
                Some(v) if v.is_finite() => params.push(v),
                _ => return plan_err!("{}: parameter {name} must be a numeric constant, got {arg}", kind.name()),
            }
        }
        let dims = match (&args[2], kind) {
            (Expr::ScalarFunction(f), AnomalyKind::HotellingT2) if f.func.name() == "make_array" => f.args.len(),
            (_, AnomalyKind::HotellingT2) => {
                return plan_err!("hotelling_t2 takes its channels as make_array(x1, ...): {}", kind.usage());
            }
            _ => 1,
        };
        kind.detector(&params, dims).map_err(|e| DataFusionError::Plan(format!("{}: {e}", kind.name())))?;
        Ok(Self { instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed), params, dims, ..Self::placeholder(kind) })
    }
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

impl ScalarUDFImpl for AnomalyUdf {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let kind = self.kind;
        let (req, opt) = kind.params();
        if arg_types.len() < 3 + req.len() || arg_types.len() > 3 + req.len() + opt.len() {
            return plan_err!("wrong number of arguments: {}", kind.usage());
        }
        if !is_text(&arg_types[0]) {
            return plan_err!("{}: key must be text (e.g. motor_id), got {}", kind.name(), arg_types[0]);
        }
        let t = match &arg_types[1] {
            DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64 | DataType::Int32 => DataType::Int64,
            other => {
                return plan_err!(
                    "{}: t must be a millisecond timestamp (e.g. window_start), got {other}",
                    kind.name()
                );
            }
        };
        let x = match (&arg_types[2], kind) {
            (DataType::List(f), AnomalyKind::HotellingT2) if f.data_type().is_numeric() || f.data_type().is_null() => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
            }
            (other, AnomalyKind::HotellingT2) => {
                return plan_err!("hotelling_t2: channels must be make_array of numbers, got {other}");
            }
            (t, _) if t.is_numeric() || t.is_null() => DataType::Float64,
            (other, _) => return plan_err!("{}: x must be numeric, got {other}", kind.name()),
        };
        let mut out = vec![DataType::Utf8, t, x];
        out.extend(arg_types[3..].iter().map(|_| DataType::Float64));
        Ok(out)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if self.instance == 0 {
            return exec_err!("{} was planned outside a continuous query", self.kind.name());
        }
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let keys = as_string_array(&arrays[0])?;
        let times = as_int64_array(&arrays[1])?;
        let values = Values::new(&arrays[2], self.dims)?;
        // A poison input for the fault tests: panics on a window of the named motor, as a bug
        // some input triggers would.
        fail::fail_point!("anomaly-invoke", |marker: Option<String>| {
            if let Some(m) = marker.filter(|m| (0..n).any(|i| keys.value(i) == m)) {
                panic!("injected poison (motor {m})");
            }
            self.score(n, keys, times, &values)
        });
        self.score(n, keys, times, &values)
    }
}

impl AnomalyUdf {
    /// Scores each row with its motor's detector, in (motor, window) order.
    fn score(
        &self,
        n: usize,
        keys: &datafusion::arrow::array::StringArray,
        times: &datafusion::arrow::array::Int64Array,
        values: &Values<'_>,
    ) -> Result<ColumnarValue> {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| keys.value(a).cmp(keys.value(b)).then(times.value(a).cmp(&times.value(b))));
        let mut out = vec![None; n];
        let mut states = self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut x = Vec::with_capacity(self.dims);
        for row in order {
            if keys.is_null(row) || times.is_null(row) || !values.get(row, &mut x) {
                continue;
            }
            let t = times.value(row);
            let state = states.try_entry(keys.value(row), || {
                let detector = self.kind.detector(&self.params, self.dims).map_err(DataFusionError::Execution)?;
                Ok::<_, DataFusionError>(MotorState { detector, last_t: i64::MIN })
            })?;
            let t_s = t as f64 / 1000.0;
            out[row] = if t > state.last_t {
                state.last_t = t;
                state.detector.step(t_s, &x)
            } else {
                state.detector.clone().step(t_s, &x)
            };
        }
        let mut b = Float64Builder::with_capacity(n);
        for v in out {
            b.append_option(v.filter(|v| v.is_finite()));
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish()) as ArrayRef))
    }
}

/// The value argument: one number per row, or a vector per row.
enum Values<'a> {
    Scalar(&'a Float64Array),
    Vector(&'a datafusion::arrow::array::ListArray),
}

impl<'a> Values<'a> {
    fn new(array: &'a ArrayRef, dims: usize) -> Result<Self> {
        Ok(if dims > 1 || matches!(array.data_type(), DataType::List(_)) {
            Values::Vector(as_list_array(array)?)
        } else {
            Values::Scalar(as_float64_array(array)?)
        })
    }

    /// Fills `x` with row `row`'s value(s); false if any is NULL.
    fn get(&self, row: usize, x: &mut Vec<f64>) -> bool {
        x.clear();
        match self {
            Values::Scalar(a) => {
                if a.is_null(row) {
                    return false;
                }
                x.push(a.value(row));
            }
            Values::Vector(l) => {
                if l.is_null(row) {
                    return false;
                }
                let item = l.value(row);
                let Some(f) = item.as_any().downcast_ref::<Float64Array>() else { return false };
                if f.null_count() > 0 {
                    return false;
                }
                x.extend(f.values().iter());
            }
        }
        true
    }
}
