//! A `use`-stage grade policy that sizes the groups an aggregate needs before it is released:
//! `tessera cluster set-policy --grade core --stage use --rule "min_group_rows=500
//! min_group_span=10m"` (in the Raft log, read by every node). Only the `min_group_*` terms are
//! read here; any other text in the rule is left to people.

use std::time::Duration;

/// The group terms of a rule: what it raises (a node never goes below its own config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupRule {
    /// `min_group_rows=N`: readings a group must hold.
    pub min_rows: Option<u64>,
    /// `min_group_span=D` (D a whole number of `s`, `m`, `h` or `d`): event time it must span.
    pub min_span: Option<Duration>,
}

impl GroupRule {
    /// The group terms of `rule`, `None` when it has none; an error names a malformed term.
    pub fn parse(rule: &str) -> Result<Option<GroupRule>, String> {
        let mut parsed = GroupRule::default();
        for term in rule.split(|c: char| c.is_whitespace() || c == ',' || c == ';') {
            let Some((key, value)) = term.split_once('=') else {
                if term.starts_with("min_group_") {
                    return Err(format!("{term:?}: expected min_group_rows=N or min_group_span=D"));
                }
                continue;
            };
            match key {
                "min_group_rows" => {
                    let rows: u64 = value.parse().map_err(|_| format!("min_group_rows={value}: not a whole number"))?;
                    if rows < 2 {
                        return Err(format!("min_group_rows={rows}: at least 2 (one reading is its own value)"));
                    }
                    parsed.min_rows = Some(rows);
                }
                "min_group_span" => parsed.min_span = Some(span(value)?),
                other if other.starts_with("min_group_") => {
                    return Err(format!("{other}: unknown (min_group_rows or min_group_span)"));
                }
                _ => {}
            }
        }
        Ok((parsed != GroupRule::default()).then_some(parsed))
    }
}

/// `30s`, `10m`, `2h`, `1d`.
fn span(text: &str) -> Result<Duration, String> {
    let bad = || format!("min_group_span={text}: expected a whole number of s, m, h or d (e.g. 60s)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .filter(|d| *d <= Duration::from_secs(366 * 86_400))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_terms_are_read_and_other_text_is_left_alone() {
        assert_eq!(
            GroupRule::parse("aggregates only: min_group_rows=500, min_group_span=10m").unwrap(),
            Some(GroupRule { min_rows: Some(500), min_span: Some(Duration::from_secs(600)) })
        );
        assert_eq!(GroupRule::parse("min_group_span=2h").unwrap().unwrap().min_span, Some(Duration::from_secs(7200)));
        assert_eq!(GroupRule::parse("no raw values leave the site").unwrap(), None);
        for bad in [
            "min_group_rows=1",
            "min_group_rows=many",
            "min_group_span=10",
            "min_group_span=5y",
            "min_group_size=3",
            "min_group_rows",
        ] {
            assert!(GroupRule::parse(bad).is_err(), "{bad}");
        }
    }
}
