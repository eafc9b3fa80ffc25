//! The continuous-query grammar: a name, alert options, and a DataFusion `SELECT` whose `FROM`
//! reads one window table function over the telemetry stream.
//!
//! ```sql
//! CREATE CONTINUOUS QUERY hot_bearing
//!   WITH (open_above = 4, close_below = 2, close_windows = 3)
//! AS SELECT motor_id, window_start, avg(vibration_x_rms) AS vib,
//!           zscore(motor_id, window_start, avg(vibration_x_rms), 30) AS score
//!    FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds')
//!    GROUP BY motor_id, window_start
//! ```
//!
//! Window functions (Flink's names and argument order):
//! `TUMBLE(telemetry, ts, size)`, `HOP(telemetry, ts, slide, size)`,
//! `SESSION(telemetry, ts, gap)`. Durations are `INTERVAL '10 seconds'`, `INTERVAL '10' SECOND`,
//! or `INTERVAL '1 minute 30 seconds'`. The window relation has the telemetry columns plus
//! `window_start` and `window_end`.
//!
//! Alert options (all optional; a query without `open_above` only records features):
//! `open_above`, `close_below` (default: `open_above`), `critical_above`, `open_windows` (1),
//! `close_windows` (1). They apply to the query's `score` column.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, Ident, ObjectName, Query, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use tessera_core::WindowSpec;

use crate::StreamError;

/// The name the window relation is planned under.
pub const WINDOW_TABLE: &str = "tessera_window";

/// How a query's `score` opens and closes alerts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertOptions {
    /// A score at or above this, for `open_windows` windows in a row, opens an alert.
    pub open_above: f64,
    /// A score below this, for `close_windows` windows in a row, closes it.
    pub close_below: f64,
    /// A score at or above this makes the alert critical.
    pub critical_above: Option<f64>,
    /// Windows in a row above `open_above` before opening.
    pub open_windows: u32,
    /// Windows in a row below `close_below` before closing.
    pub close_windows: u32,
}

/// A parsed `CREATE CONTINUOUS QUERY`.
#[derive(Debug, Clone)]
pub struct QueryDef {
    /// The query's name (lower case unless quoted).
    pub name: String,
    /// The window it reads.
    pub window: WindowSpec,
    /// Alert options, if the query raises alerts.
    pub alerts: Option<AlertOptions>,
    /// The `SELECT`, reading [`WINDOW_TABLE`] instead of the window function.
    pub select: Box<Query>,
    /// The statement as written.
    pub text: String,
}

/// Parses one `CREATE CONTINUOUS QUERY` statement.
pub fn parse(sql: &str) -> Result<QueryDef, StreamError> {
    let gerr = |m: String| StreamError::Grammar(m);
    let perr = |context: &str, source: ParserError| StreamError::Parse { context: Some(context.to_string()), source };
    let dialect = GenericDialect {};
    let mut p =
        Parser::new(&dialect).try_with_sql(sql).map_err(|source| StreamError::Parse { context: None, source })?;
    for word in ["CREATE", "CONTINUOUS", "QUERY"] {
        let got = p.next_token();
        if !matches!(&got.token, Token::Word(w) if w.value.eq_ignore_ascii_case(word)) {
            return Err(gerr(format!(
                "expected `CREATE CONTINUOUS QUERY <name> [WITH (...)] AS SELECT ...`, found `{}` where {word} belongs",
                got.token
            )));
        }
    }
    let name = p.parse_identifier().map_err(|e| perr("query name", e))?;
    let name = if name.quote_style.is_some() { name.value } else { name.value.to_lowercase() };
    let mut options: Vec<(String, f64)> = Vec::new();
    if matches!(&p.peek_token().token, Token::Word(w) if w.value.eq_ignore_ascii_case("WITH")) {
        p.next_token();
        p.expect_token(&Token::LParen).map_err(|e| perr("WITH", e))?;
        loop {
            let key = p.parse_identifier().map_err(|e| perr("WITH option name", e))?.value.to_lowercase();
            p.expect_token(&Token::Eq).map_err(|e| perr(&format!("WITH {key}"), e))?;
            let value = p.parse_expr().map_err(|e| perr(&format!("WITH {key}"), e))?;
            let number: f64 =
                value.to_string().parse().map_err(|_| gerr(format!("WITH {key}: expected a number, got {value}")))?;
            options.push((key, number));
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen).map_err(|e| perr("WITH", e))?;
    }
    let as_kw = p.next_token();
    if !matches!(&as_kw.token, Token::Word(w) if w.value.eq_ignore_ascii_case("AS")) {
        return Err(gerr(format!("expected AS after the query name, found `{}`", as_kw.token)));
    }
    let mut select = p.parse_query().map_err(|e| perr(&name, e))?;
    while p.consume_token(&Token::SemiColon) {}
    let rest = p.peek_token();
    if rest.token != Token::EOF {
        return Err(gerr(format!("{name}: unexpected `{}` after the query", rest.token)));
    }
    let mut finder = WindowFinder::default();
    let _ = select.visit(&mut finder);
    if let Some(e) = finder.error {
        return Err(gerr(format!("{name}: {e}")));
    }
    let window = match finder.found.as_slice() {
        [w] => *w,
        [] => {
            return Err(gerr(format!(
                "{name}: the query must read a window: FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds'), HOP(...) or SESSION(...)"
            )));
        }
        _ => return Err(gerr(format!("{name}: a continuous query reads exactly one window function"))),
    };
    window.validate().map_err(|source| StreamError::Window { query: name.clone(), source })?;
    Ok(QueryDef { alerts: alert_options(&name, &options)?, name, window, select, text: sql.trim().to_string() })
}

fn alert_options(name: &str, options: &[(String, f64)]) -> Result<Option<AlertOptions>, StreamError> {
    let get = |k: &str| options.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
    for (key, _) in options {
        if !["open_above", "close_below", "critical_above", "open_windows", "close_windows"].contains(&key.as_str()) {
            return Err(StreamError::Grammar(format!(
                "{name}: unknown WITH option {key} (known: open_above, close_below, critical_above, open_windows, close_windows)"
            )));
        }
    }
    let Some(open_above) = get("open_above") else {
        if !options.is_empty() {
            return Err(StreamError::Grammar(format!("{name}: alert options need open_above")));
        }
        return Ok(None);
    };
    let close_below = get("close_below").unwrap_or(open_above);
    if close_below > open_above {
        return Err(StreamError::Grammar(format!(
            "{name}: close_below ({close_below}) must not exceed open_above ({open_above})"
        )));
    }
    let count = |k: &str| -> Result<u32, StreamError> {
        match get(k) {
            None => Ok(1),
            Some(v) if v >= 1.0 && v.fract() == 0.0 && v <= 10_000.0 => Ok(v as u32),
            Some(v) => Err(StreamError::Grammar(format!("{name}: {k} must be a whole number ≥ 1, got {v}"))),
        }
    };
    Ok(Some(AlertOptions {
        open_above,
        close_below,
        critical_above: get("critical_above"),
        open_windows: count("open_windows")?,
        close_windows: count("close_windows")?,
    }))
}

/// Finds window table functions, replacing each with [`WINDOW_TABLE`].
#[derive(Default)]
struct WindowFinder {
    found: Vec<WindowSpec>,
    error: Option<String>,
}

impl VisitorMut for WindowFinder {
    type Break = ();

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args: args @ Some(_), .. } = tf {
            let kind = name.to_string().to_uppercase();
            if ["TUMBLE", "HOP", "SESSION"].contains(&kind.as_str()) {
                match window_spec(&kind, &args.as_ref().expect("some").args) {
                    Ok(spec) => self.found.push(spec),
                    Err(e) => {
                        self.error = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                *name = ObjectName::from(vec![Ident::new(WINDOW_TABLE)]);
                *args = None;
            }
        }
        ControlFlow::Continue(())
    }
}

fn window_spec(kind: &str, args: &[FunctionArg]) -> Result<WindowSpec, String> {
    let exprs: Vec<&SqlExpr> = args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            other => Err(format!("{kind}: unexpected argument {other}")),
        })
        .collect::<Result<_, _>>()?;
    let usage = match kind {
        "TUMBLE" => "TUMBLE(telemetry, ts, size)",
        "HOP" => "HOP(telemetry, ts, slide, size)",
        _ => "SESSION(telemetry, ts, gap)",
    };
    let want = if kind == "HOP" { 4 } else { 3 };
    if exprs.len() != want {
        return Err(format!("{kind} takes {want} arguments: {usage}"));
    }
    if !exprs[0].to_string().eq_ignore_ascii_case("telemetry") {
        return Err(format!("{kind}: the first argument must be the stream `telemetry`, got {}", exprs[0]));
    }
    if !exprs[1].to_string().eq_ignore_ascii_case("ts") {
        return Err(format!("{kind}: the time column must be `ts` (event time), got {}", exprs[1]));
    }
    let d1 = duration_ms(exprs[2])?;
    Ok(match kind {
        "TUMBLE" => WindowSpec::Tumbling { size_ms: d1 },
        "HOP" => WindowSpec::Hopping { slide_ms: d1, size_ms: duration_ms(exprs[3])? },
        _ => WindowSpec::Session { gap_ms: d1 },
    })
}

/// Milliseconds of an `INTERVAL '…'` literal.
fn duration_ms(e: &SqlExpr) -> Result<i64, String> {
    let SqlExpr::Interval(iv) = e else {
        return Err(format!("expected a duration like INTERVAL '10 seconds', got {e}"));
    };
    let mut text = iv.value.to_string().trim_matches('\'').to_string();
    if let Some(unit) = &iv.leading_field {
        text = format!("{text} {unit}");
    }
    parse_duration(&text).ok_or_else(|| format!("cannot read the duration {e}: use e.g. INTERVAL '10 seconds'"))
}

/// Parses `10 seconds`, `1 minute 30 seconds`, `500 ms`, `2h`.
fn parse_duration(text: &str) -> Option<i64> {
    // Split into runs of number characters and runs of letters: "1min30s" → 1 min 30 s.
    let mut tokens: Vec<String> = Vec::new();
    for c in text.chars() {
        if c.is_whitespace() {
            tokens.push(String::new());
            continue;
        }
        let numeric = c.is_ascii_digit() || c == '.';
        match tokens.last_mut() {
            Some(t) if !t.is_empty() && t.chars().all(|d| d.is_ascii_digit() || d == '.') == numeric => t.push(c),
            _ => tokens.push(c.to_ascii_lowercase().to_string()),
        }
        if let Some(t) = tokens.last_mut() {
            *t = t.to_lowercase();
        }
    }
    tokens.retain(|t| !t.is_empty());
    if tokens.is_empty() || !tokens.len().is_multiple_of(2) {
        return None;
    }
    let mut total = 0.0;
    for pair in tokens.chunks(2) {
        let n: f64 = pair[0].parse().ok()?;
        let unit = match pair[1].as_str() {
            "ms" | "millisecond" | "milliseconds" => 1.0,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
            "h" | "hour" | "hours" => 3_600_000.0,
            "d" | "day" | "days" => 86_400_000.0,
            _ => return None,
        };
        total += n * unit;
    }
    (total >= 1.0).then_some(total.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOT: &str = "CREATE CONTINUOUS QUERY Hot_Bearing WITH (open_above = 4, close_below = 2.5, close_windows = 3) AS \
        SELECT motor_id, window_start, avg(vibration_x_rms) AS score FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds') \
        GROUP BY motor_id, window_start;";

    #[test]
    fn a_full_statement_parses() {
        let q = parse(HOT).unwrap();
        assert_eq!(q.name, "hot_bearing");
        assert_eq!(q.window, WindowSpec::Tumbling { size_ms: 10_000 });
        let a = q.alerts.unwrap();
        assert_eq!((a.open_above, a.close_below, a.open_windows, a.close_windows), (4.0, 2.5, 1, 3));
        assert!(q.select.to_string().contains("FROM tessera_window"), "{}", q.select);
    }

    #[test]
    fn window_functions_and_durations() {
        let spec =
            |from: &str| parse(&format!("CREATE CONTINUOUS QUERY q AS SELECT motor_id FROM {from}")).map(|q| q.window);
        assert_eq!(
            spec("HOP(telemetry, ts, INTERVAL '5' SECOND, INTERVAL '1 minute')").unwrap(),
            WindowSpec::Hopping { size_ms: 60_000, slide_ms: 5_000 }
        );
        assert_eq!(
            spec("SESSION(telemetry, ts, INTERVAL '1 minute 30 seconds')").unwrap(),
            WindowSpec::Session { gap_ms: 90_000 }
        );
        assert_eq!(
            spec("TUMBLE(telemetry, ts, INTERVAL '500 ms') AS w").unwrap(),
            WindowSpec::Tumbling { size_ms: 500 }
        );
        assert_eq!(parse_duration("2h"), Some(7_200_000));
        assert_eq!(parse_duration("1.5 s"), Some(1_500));
    }

    #[test]
    fn mistakes_get_clear_errors() {
        let err = |sql: &str| parse(sql).unwrap_err().to_string();
        assert!(err("SELECT 1").contains("CREATE CONTINUOUS QUERY"));
        assert!(err("CREATE CONTINUOUS QUERY q AS SELECT motor_id FROM telemetry").contains("must read a window"));
        assert!(
            err("CREATE CONTINUOUS QUERY q AS SELECT motor_id FROM TUMBLE(readings, ts, INTERVAL '1 s')")
                .contains("`telemetry`")
        );
        assert!(
            err("CREATE CONTINUOUS QUERY q AS SELECT motor_id FROM TUMBLE(telemetry, ts, 10)").contains("INTERVAL")
        );
        assert!(
            err(
                "CREATE CONTINUOUS QUERY q AS SELECT motor_id FROM HOP(telemetry, ts, INTERVAL '20 s', INTERVAL '10 s')"
            )
            .contains("slide_ms")
        );
        assert!(
            err(
                "CREATE CONTINUOUS QUERY q WITH (open_abuve = 3) AS SELECT 1 FROM TUMBLE(telemetry, ts, INTERVAL '1 s')"
            )
            .contains("unknown WITH option open_abuve")
        );
        assert!(err("CREATE CONTINUOUS QUERY q WITH (open_above = 3, close_below = 4) AS SELECT 1 FROM TUMBLE(telemetry, ts, INTERVAL '1 s')").contains("close_below"));
        assert!(err("CREATE CONTINUOUS QUERY q AS SELECT 1 FROM TUMBLE(telemetry, ts, INTERVAL '1 s') x JOIN TUMBLE(telemetry, ts, INTERVAL '2 s') y ON true").contains("exactly one"));
    }

    /// sqlparser's and the window spec's errors are kept as the error's source.
    #[test]
    fn library_errors_are_kept_as_sources() {
        let e = parse("CREATE CONTINUOUS QUERY q AS SELECT (").unwrap_err();
        assert!(matches!(&e, StreamError::Parse { context: Some(c), .. } if c == "q"), "{e:?}");
        let source =
            std::error::Error::source(&e).and_then(|s| s.downcast_ref::<ParserError>()).expect("sqlparser's error");
        assert_eq!(e.to_string(), format!("continuous query: q: {source}"));
        let e = parse(
            "CREATE CONTINUOUS QUERY q AS SELECT motor_id FROM HOP(telemetry, ts, INTERVAL '20 s', INTERVAL '10 s')",
        )
        .unwrap_err();
        let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<tessera_core::WindowError>());
        assert!(matches!(source, Some(tessera_core::WindowError::SlideTooLong { .. })), "{e:?}");
    }
}
