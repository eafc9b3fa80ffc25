//! How commands print: what a node answered to a write, and data in the format the caller
//! chose (`--output table|json|csv`, [`OutputArgs`]) through one path, record batches
//! ([`format_batches`]; a command's own rows go through [`Rows`]).

use anyhow::{Result, bail};
use datafusion::arrow::record_batch::RecordBatch;
use tessera_proto::raft as pb;

/// A node's answer to a write: its log index, or the registry's refusal as the error.
pub fn written(what: &str, reply: pb::WriteResponse) -> Result<()> {
    if reply.rejected.is_empty() {
        println!("{what}: committed at log index {}", reply.log_index);
        Ok(())
    } else {
        bail!("{what}: refused by the registry (log index {}): {}", reply.log_index, reply.rejected)
    }
}

/// Voters, learners and the log index of a membership.
pub fn print_membership(m: &pb::MembershipResponse) {
    let list = |nodes: &[pb::NodeSpec]| {
        if nodes.is_empty() {
            "-".to_string()
        } else {
            nodes.iter().map(|n| format!("{} ({} {})", n.id, n.site, n.addr)).collect::<Vec<_>>().join(", ")
        }
    };
    println!("voters: {}\nlearners: {}\nmembership at log index {}", list(&m.voters), list(&m.learners), m.log_index);
}

/// Milliseconds since the epoch as an RFC 3339 UTC time.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// An optional index, `-` when unset.
pub fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// How a command prints data: a text table for people, JSON or CSV for programs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// A text table (or the command's own lines).
    #[default]
    Table,
    /// A JSON array with an object per row.
    Json,
    /// CSV with a header row.
    Csv,
}

/// `--output` of the commands that print data.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// How to print the result: table, json (an array of objects) or csv (with a header).
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, env = "TESSERA__CLIENT__OUTPUT")]
    pub output: OutputFormat,
}

/// Record batches in `format`, as text.
pub fn format_batches(format: OutputFormat, batches: &[RecordBatch]) -> Result<String> {
    use datafusion::arrow::{csv, json};
    Ok(match format {
        OutputFormat::Table => datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string(),
        OutputFormat::Json => {
            let mut writer = json::ArrayWriter::new(Vec::new());
            writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
            writer.finish()?;
            let mut text = String::from_utf8(writer.into_inner())?;
            if text.is_empty() {
                text.push_str("[]"); // no rows: the writer writes nothing
            }
            text
        }
        OutputFormat::Csv => {
            let mut out = Vec::new();
            let mut writer = csv::WriterBuilder::new().with_header(true).build(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
            drop(writer);
            let text = String::from_utf8(out)?;
            match (text.is_empty(), batches.first()) {
                // No rows but a schema: the header alone.
                (true, Some(b)) => {
                    b.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(",") + "\n"
                }
                _ => text,
            }
        }
    })
}

/// One value of a [`Rows`] table.
#[derive(Debug, Clone)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
    /// Nothing (null).
    Null,
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_string())
    }
}

impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(v)
    }
}

impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or_else(|_| Cell::Text(v.to_string()), Cell::Int)
    }
}

impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Cell::Int(v)
    }
}

impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

/// Rows a command prints, built up one row at a time, in any [`OutputFormat`]: a column is
/// whole numbers if every value in it is one (or null), else text.
#[derive(Debug, Clone)]
pub struct Rows {
    columns: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Rows {
    /// An empty table with these columns.
    pub fn new(columns: &[&'static str]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row, one cell per column.
    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// The rows as one record batch.
    pub fn batch(&self) -> Result<RecordBatch> {
        use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (i, name) in self.columns.iter().enumerate() {
            let cells = self.rows.iter().map(|r| &r[i]);
            if cells.clone().all(|c| matches!(c, Cell::Int(_) | Cell::Null)) {
                let values: Int64Array = cells.map(|c| if let Cell::Int(v) = c { Some(*v) } else { None }).collect();
                fields.push(Field::new(*name, DataType::Int64, true));
                arrays.push(std::sync::Arc::new(values));
            } else {
                let values: StringArray = cells
                    .map(|c| match c {
                        Cell::Text(t) => Some(t.clone()),
                        Cell::Int(v) => Some(v.to_string()),
                        Cell::Null => None,
                    })
                    .collect();
                fields.push(Field::new(*name, DataType::Utf8, true));
                arrays.push(std::sync::Arc::new(values));
            }
        }
        Ok(RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), arrays)?)
    }

    /// Prints the rows in `format`.
    pub fn print(&self, format: OutputFormat) -> Result<()> {
        println!("{}", format_batches(format, &[self.batch()?])?.trim_end());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_print_as_a_table_json_and_csv_with_numbers_kept_numbers() {
        let mut rows = Rows::new(&["site", "motors", "nodes"]);
        rows.push(vec!["site-a".into(), 3u64.into(), "1, 2".into()]);
        rows.push(vec!["site \"b\"".into(), Cell::Null, "".into()]);
        let batch = rows.batch().unwrap();
        let json = format_batches(OutputFormat::Json, std::slice::from_ref(&batch)).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[0], serde_json::json!({"site": "site-a", "motors": 3, "nodes": "1, 2"}));
        assert_eq!(parsed[1]["site"], "site \"b\"");
        let csv = format_batches(OutputFormat::Csv, std::slice::from_ref(&batch)).unwrap();
        assert_eq!(csv, "site,motors,nodes\nsite-a,3,\"1, 2\"\n\"site \"\"b\"\"\",,\n");
        let table = format_batches(OutputFormat::Table, &[batch]).unwrap();
        assert!(table.contains("| site-a   | 3      | 1, 2  |"), "{table}");
        let empty = Rows::new(&["a", "b"]).batch().unwrap();
        assert_eq!(format_batches(OutputFormat::Json, std::slice::from_ref(&empty)).unwrap(), "[]");
        assert_eq!(format_batches(OutputFormat::Csv, &[empty]).unwrap(), "a,b\n");
    }
}
