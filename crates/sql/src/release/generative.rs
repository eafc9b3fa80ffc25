//! A generative test of [`super::release`]: thousands of random queries over `telemetry`, as a
//! fleet analyst would send them, and not one answer may hold a planted reading.
//!
//! One motor (`M2`) has a single reading whose `vibration_x_rms` (core) and `current_a`
//! (important) are marker values; `M1` has 200 ordinary readings over 200 s. The queries come
//! from a small grammar (projections, predicates, every kind of aggregate, DISTINCT, FILTER,
//! GROUP BY and ROLLUP, HAVING, ORDER BY, LIMIT, subqueries, CTEs, joins, UNION, window
//! functions, CASE), each parsed by sqlparser before it is planned. Whatever plans and is
//! released is run, and no value of its answer may be a marker or a simple function of one.
//! The seed is printed; `TESSERA_RELEASE_SEED` and `TESSERA_RELEASE_QUERIES` replay or widen a run.

use datafusion::arrow::array::{Array, Float64Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::context::SessionContext;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_core::{DataGrade, GradeMap};

use super::{GroupPolicy, LiveGroupPolicy, release};
use crate::error::SqlError;

const CORE_MARKER: f64 = 4242.4217;
const IMPORTANT_MARKER: f64 = 3131.3119;

/// M2's one reading carries the markers; M1 has 200 ordinary readings a second apart.
fn context() -> SessionContext {
    let mut readings = vec![("M2", 1_050_000, CORE_MARKER, IMPORTANT_MARKER)];
    readings
        .extend((0..200i64).map(|i| ("M1", 1_000_000 + i * 1000, 1.0 + (i % 7) as f64 * 0.5, 10.0 + (i % 5) as f64)));
    super::tests::telemetry(&readings)
}

/// Random SQL from a small grammar over `telemetry`.
struct Grammar {
    rng: StdRng,
}

impl Grammar {
    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.rng.random_range(0..options.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn column(&mut self) -> String {
        self.pick(&["vibration_x_rms", "current_a", "motor_id", "ts", "vibration_x_rms", "current_a"]).to_string()
    }

    fn value(&mut self) -> String {
        self.pick(&["vibration_x_rms", "current_a"]).to_string()
    }

    fn number(&mut self) -> String {
        self.pick(&["0", "1", "2", "4242", "4243", "3131", "3132", "1000", "0.5"]).to_string()
    }

    /// A numeric expression, mostly over the graded values.
    fn expr(&mut self, depth: u32) -> String {
        if depth == 0 || self.chance(0.5) {
            return if self.chance(0.8) { self.value() } else { self.number() };
        }
        match self.rng.random_range(0..7) {
            0 => format!("{} * 2", self.expr(depth - 1)),
            1 => format!("({} + 1)", self.expr(depth - 1)),
            2 => format!("abs({})", self.expr(depth - 1)),
            3 => format!("coalesce({}, 0)", self.expr(depth - 1)),
            4 => format!("CASE WHEN {} THEN {} ELSE 0 END", self.predicate(depth - 1), self.expr(depth - 1)),
            5 => format!("CAST({} AS DOUBLE)", self.expr(depth - 1)),
            _ => format!("greatest({}, {})", self.expr(depth - 1), self.expr(depth - 1)),
        }
    }

    fn predicate(&mut self, depth: u32) -> String {
        let simple = |g: &mut Self| match g.rng.random_range(0..7) {
            0 => "motor_id = 'M2'".to_string(),
            1 => "motor_id = 'M1'".to_string(),
            2 => "ts = to_timestamp_millis(1050000)".to_string(),
            3 => format!("ts < to_timestamp_millis({})", g.pick(&["1060000", "1100000", "1300000"])),
            4 => format!("{} > {}", g.value(), g.number()),
            5 => format!("{} BETWEEN {} AND {}", g.value(), g.number(), g.number()),
            _ => format!("{} = {}", g.value(), g.pick(&["4242.4217", "3131.3119", "1"])),
        };
        if depth == 0 || self.chance(0.6) {
            return simple(self);
        }
        match self.rng.random_range(0..4) {
            0 => format!("({} AND {})", self.predicate(depth - 1), self.predicate(depth - 1)),
            1 => format!("({} OR {})", self.predicate(depth - 1), self.predicate(depth - 1)),
            2 => format!("NOT ({})", self.predicate(depth - 1)),
            _ => format!("motor_id IN (SELECT motor_id FROM telemetry WHERE {})", self.predicate(depth - 1)),
        }
    }

    fn aggregate(&mut self) -> String {
        // Allowed functions most of the time, so that both sides of the rule are exercised.
        let function = if self.chance(0.7) {
            self.pick(&["count", "sum", "avg", "stddev", "var", "var_pop"])
        } else {
            self.pick(&["min", "max", "median", "first_value", "last_value", "array_agg", "bit_and", "approx_distinct"])
        };
        let distinct = if self.chance(0.05) { "DISTINCT " } else { "" };
        let arg = if self.chance(0.9) { self.value() } else { self.expr(2) };
        let filter = if self.chance(0.05) { format!(" FILTER (WHERE {})", self.predicate(1)) } else { String::new() };
        match function {
            "bit_and" => format!("bit_and(CAST({arg} AS BIGINT)){filter}"),
            _ => format!("{function}({distinct}{arg}){filter}"),
        }
    }

    fn keys(&mut self) -> Vec<String> {
        let mut keys = Vec::new();
        for key in ["motor_id", "ts", "vibration_x_rms", "current_a", "date_bin(INTERVAL '60 seconds', ts)"] {
            if self.chance(if key.contains("rms") || key.contains("current") { 0.1 } else { 0.35 }) {
                keys.push(key.to_string());
            }
        }
        keys
    }

    fn source(&mut self, depth: u32) -> String {
        if depth == 0 || self.chance(0.75) {
            return "telemetry".into();
        }
        match self.rng.random_range(0..3) {
            0 => format!("(SELECT * FROM telemetry WHERE {}) AS s", self.predicate(1)),
            1 => "(SELECT motor_id, ts, vibration_x_rms AS vibration_x_rms, current_a FROM telemetry) AS s".into(),
            _ => format!("(SELECT * FROM telemetry ORDER BY {} DESC LIMIT 50) AS s", self.value()),
        }
    }

    /// One SELECT.
    fn select(&mut self, depth: u32) -> String {
        let source = self.source(depth);
        let filter = if self.chance(0.4) { format!(" WHERE {}", self.predicate(2)) } else { String::new() };
        match self.rng.random_range(0..10) {
            // Aggregates, the most common shape.
            0..=5 => {
                let keys = self.keys();
                let mut items = keys.clone();
                for _ in 0..self.rng.random_range(1..3) {
                    items.push(self.aggregate());
                }
                let group = if keys.is_empty() {
                    String::new()
                } else if self.chance(0.1) {
                    format!(" GROUP BY ROLLUP({})", keys.join(", "))
                } else {
                    format!(" GROUP BY {}", keys.join(", "))
                };
                let having = if self.chance(0.25) {
                    format!(" HAVING {} {} {}", self.aggregate(), self.pick(&["=", ">", "<"]), self.number())
                } else {
                    String::new()
                };
                let order =
                    if self.chance(0.3) { format!(" ORDER BY {} DESC", self.aggregate()) } else { String::new() };
                let limit = if self.chance(0.3) { " LIMIT 1" } else { "" };
                format!("SELECT {} FROM {source}{filter}{group}{having}{order}{limit}", items.join(", "))
            }
            // Rows.
            6 => {
                let items: Vec<String> = (0..self.rng.random_range(1..3)).map(|_| self.column()).collect();
                let order =
                    if self.chance(0.5) { format!(" ORDER BY {} DESC LIMIT 1", self.value()) } else { String::new() };
                format!("SELECT {} FROM {source}{filter}{order}", items.join(", "))
            }
            // Window functions.
            7 => format!(
                "SELECT motor_id, {}({}) OVER (PARTITION BY motor_id ORDER BY ts) FROM {source}{filter}",
                self.pick(&["sum", "avg", "max", "first_value", "lag", "lead", "count"]),
                self.value()
            ),
            // A join on the values, or a scalar subquery.
            8 => {
                if self.chance(0.5) {
                    format!(
                        "SELECT a.motor_id, count(*) FROM telemetry a JOIN telemetry b ON a.{} = b.{} GROUP BY a.motor_id",
                        self.value(),
                        self.value()
                    )
                } else {
                    format!(
                        "SELECT motor_id, (SELECT {} FROM telemetry WHERE {}) FROM telemetry",
                        self.aggregate(),
                        self.predicate(1)
                    )
                }
            }
            // CASE over values.
            _ => format!("SELECT motor_id, {} AS x FROM {source}{filter}", self.expr(3)),
        }
    }

    fn query(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0 => format!("({}) UNION ALL ({})", self.select(1), self.select(1)),
            1 => format!("WITH q AS ({}) SELECT * FROM q", self.select(1)),
            _ => self.select(1),
        }
    }
}

/// Whether `value` gives a marker away (the value, or a simple function of it).
fn reveals(value: f64) -> bool {
    [CORE_MARKER, IMPORTANT_MARKER].iter().any(|m| {
        [*m, m * 2.0, m + 1.0, m * m, m * 4.0, m + 2.0, (m + 1.0) * 2.0, m * 2.0 + 1.0]
            .iter()
            .any(|leak| (value - leak).abs() < 1e-3)
    })
}

/// Every value of `batches` as text, floats also checked by [`reveals`]; the first leak found.
fn leak(batches: &[RecordBatch]) -> Option<String> {
    let options = FormatOptions::default();
    for batch in batches {
        for column in batch.columns() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options).expect("formatter");
            for row in 0..column.len() {
                let text = formatter.value(row).to_string();
                if text.contains("4242.42") || text.contains("3131.31") || text.contains("8484.84") {
                    return Some(text);
                }
                if let Some(floats) = column.as_any().downcast_ref::<Float64Array>()
                    && floats.is_valid(row)
                    && reveals(floats.value(row))
                {
                    return Some(text);
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_random_query_gets_a_planted_reading_out() {
    let seed: u64 =
        std::env::var("TESSERA_RELEASE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let queries: usize = std::env::var("TESSERA_RELEASE_QUERIES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    println!("release generative test: seed {seed} (TESSERA_RELEASE_SEED={seed} replays it), {queries} queries");
    let ctx = context();
    let grades = GradeMap::builtin();
    let policy = LiveGroupPolicy::new(GroupPolicy::default());
    let refused = |_: DataGrade, why: String| SqlError::PermissionDenied(why);
    let mut grammar = Grammar { rng: StdRng::seed_from_u64(seed) };
    let (mut answered, mut refusals, mut unplanned) = (0, 0, 0);
    for _ in 0..queries {
        let sql = grammar.query();
        Parser::parse_sql(&GenericDialect {}, &sql).unwrap_or_else(|e| panic!("the grammar wrote bad SQL: {sql}: {e}"));
        let Ok(plan) = ctx.state().create_logical_plan(&sql).await else {
            unplanned += 1;
            continue;
        };
        let plan = match release(plan, &ctx, &grades, DataGrade::General, &policy, &refused) {
            Ok(plan) => plan,
            Err(SqlError::PermissionDenied(_)) => {
                refusals += 1;
                continue;
            }
            Err(_) => {
                unplanned += 1;
                continue;
            }
        };
        let Ok(df) = ctx.execute_logical_plan(plan).await else {
            unplanned += 1;
            continue;
        };
        let Ok(batches) = df.collect().await else {
            unplanned += 1;
            continue;
        };
        answered += 1;
        if let Some(value) = leak(&batches) {
            panic!(
                "seed {seed}: {sql}\nreleased a planted reading ({value}):\n{}",
                datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("text")
            );
        }
    }
    println!("release generative test: {answered} answered, {refusals} refused, {unplanned} did not plan or run");
    assert!(
        answered >= queries / 20 && refusals >= queries / 4,
        "the grammar reaches both sides: {answered} answered, {refusals} refused"
    );
}
