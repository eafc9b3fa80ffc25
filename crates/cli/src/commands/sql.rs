//! `tessera sql`: SQL against a node's Flight SQL endpoint. One statement (`tessera sql "…"`),
//! a file of them (`-f FILE`), or what stdin gives: an interactive shell on a terminal (line
//! editing, history, statements over several lines up to `;`, `\d` to list tables, `\timing`),
//! else a script read to the end. Results print as a table, JSON or CSV (`--output`).
//!
//! A script stops at its first error (the exit status says so); the shell prints the error and
//! goes on.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::record_batch::RecordBatch;
use tonic::transport::Channel;

use crate::output::{OutputArgs, OutputFormat, format_batches};

/// Where the endpoint is and who is asking.
#[derive(clap::Args, Debug, Clone)]
pub struct SqlConnection {
    /// The endpoint, host:port.
    #[arg(long, env = "TESSERA__CLIENT__SQL", default_value = "127.0.0.1:50051")]
    pub at: String,
    /// User name (with `--password`), for the handshake.
    #[arg(long, env = "TESSERA__CLIENT__USER")]
    pub user: Option<String>,
    /// Password of `--user`.
    #[arg(long, env = "TESSERA__CLIENT__PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A bearer token instead of user and password.
    #[arg(long, env = "TESSERA__CLIENT__TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How long to wait for each answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Take what the sites that answer in time return (the others are left out, named in a
    /// warning), instead of an error when any site cannot answer.
    #[arg(long, env = "TESSERA__CLIENT__ALLOW_PARTIAL")]
    pub allow_partial: bool,
    /// TLS (for an endpoint that has `[tls]`).
    #[command(flatten)]
    pub tls: crate::args::TlsArgs,
}

/// `tessera sql`: a statement, a file, a script on stdin, or an interactive shell.
#[derive(clap::Args, Debug, Clone)]
pub struct SqlArgs {
    /// The SQL to run (several statements separated by `;`). Without it or `--file`, statements
    /// come from stdin: an interactive shell on a terminal, else a script.
    pub query: Option<String>,
    /// Run the statements in this file (separated by `;`; `\` commands as in the shell).
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with = "query")]
    pub file: Option<PathBuf>,
    /// The endpoint and credentials.
    #[command(flatten)]
    pub connection: SqlConnection,
    /// The results' format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// After each result, print its row count and how long it took (on stderr).
    #[arg(long)]
    pub timing: bool,
}

/// One connection to an endpoint, authenticated, for any number of statements.
pub struct SqlSession {
    runtime: tokio::runtime::Runtime,
    client: FlightSqlServiceClient<Channel>,
    /// What the last result said it is missing (a partial answer), if anything.
    warning: Option<String>,
}

impl SqlSession {
    /// Connects and authenticates (handshake with user and password, or the bearer token).
    pub fn connect(connection: &SqlConnection) -> Result<Self> {
        let runtime = crate::runtime()?;
        let client = runtime.block_on(async {
            let tls = connection.tls.client()?;
            let channel =
                tessera_node::control::grpc_channel(&connection.at, &tls, connection.timeout, "SQL endpoint").await?;
            let mut client = FlightSqlServiceClient::new(channel);
            match (&connection.token, &connection.user, &connection.password) {
                (Some(token), _, _) => client.set_token(token.clone()),
                (None, Some(user), Some(password)) => {
                    client
                        .handshake(user, password)
                        .await
                        .map_err(|e| anyhow::anyhow!("{}: {}", connection.at, flight_message(e)))?;
                }
                _ => anyhow::bail!(
                    "give --token, or --user and --password (or TESSERA__CLIENT__TOKEN, or TESSERA__CLIENT__USER and \
                     TESSERA__CLIENT__PASSWORD)"
                ),
            }
            if connection.allow_partial {
                client.set_header(tessera_sql::fanout::ALLOW_PARTIAL, "true");
            }
            anyhow::Ok(client)
        })?;
        Ok(Self { runtime, client, warning: None })
    }

    /// Runs one statement; its result's batches. The server's refusal comes back as an error
    /// carrying its gRPC code and message.
    pub fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        use futures::TryStreamExt as _;
        let client = &mut self.client;
        let (batches, warning) = self.runtime.block_on(async {
            let info =
                client.execute(sql.to_string(), None).await.map_err(|e| anyhow::anyhow!("{}", flight_message(e)))?;
            let mut batches = Vec::new();
            let mut warning = None;
            for endpoint in info.endpoint {
                let ticket = endpoint.ticket.context("the server sent an endpoint without a ticket")?;
                let mut stream = client.do_get(ticket).await.map_err(|e| anyhow::anyhow!("{}", flight_message(e)))?;
                while let Some(batch) = stream.try_next().await.map_err(|e| anyhow::anyhow!("{}", flight_message(e)))? {
                    batches.push(batch);
                }
                warning = warning.or_else(|| stream.schema().and_then(|s| partial_warning(s.metadata())));
            }
            anyhow::Ok((batches, warning))
        })?;
        self.warning = warning;
        Ok(batches)
    }

    /// What the last result said it is missing (only a caller who allows partial answers gets
    /// one), as a line to show.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }
}

/// The warning a result's schema metadata gives: the sites left out and why.
fn partial_warning(metadata: &std::collections::HashMap<String, String>) -> Option<String> {
    use tessera_sql::fanout::{INCOMPLETE_METADATA_KEY, SITES_ANSWERED_METADATA_KEY, SITES_MISSING_METADATA_KEY};
    let missing = metadata.get(INCOMPLETE_METADATA_KEY)?;
    let mut text = String::from("warning: a partial answer");
    if let Some(answered) = metadata.get(SITES_ANSWERED_METADATA_KEY) {
        text.push_str(&format!(" from sites {answered}"));
    }
    if let Some(left_out) = metadata.get(SITES_MISSING_METADATA_KEY) {
        text.push_str(&format!("; left out: {left_out}"));
    }
    text.push_str(&format!(" ({missing})"));
    Some(text)
}

/// Runs `sql` on a new connection and returns its result as a text table.
pub fn query_table(connection: &SqlConnection, sql: &str) -> Result<String> {
    let batches = SqlSession::connect(connection)?.query(sql)?;
    format_batches(OutputFormat::Table, &batches)
}

/// The server's words out of a client error: a gRPC status's code and message.
fn flight_message(e: arrow_flight::error::FlightError) -> String {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => format!("{:?}: {}", status.code(), status.message()),
        other => other.to_string(),
    }
}

/// What a line of input completes: statements (up to their `;`) and `\` commands.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Statement(String),
    Command(String),
}

/// Cuts input into statements at `;` outside quotes and comments, across lines; a line that
/// starts with `\` outside a statement is a command.
#[derive(Debug, Default)]
struct Splitter {
    pending: String,
    /// Inside `'…'` or `"…"`: the quote.
    quote: Option<char>,
}

impl Splitter {
    /// Takes one line; returns what it completed.
    fn line(&mut self, line: &str) -> Vec<Input> {
        if self.pending.trim().is_empty() && self.quote.is_none() && line.trim_start().starts_with('\\') {
            self.pending.clear();
            return vec![Input::Command(line.trim().to_string())];
        }
        let mut done = Vec::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (self.quote, c) {
                (Some(q), c) if c == q => self.quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => self.quote = Some(c),
                (None, '-') if chars.peek() == Some(&'-') => break, // a comment to the line's end
                (None, ';') => {
                    let statement = std::mem::take(&mut self.pending);
                    if !statement.trim().is_empty() {
                        done.push(Input::Statement(statement.trim().to_string()));
                    }
                    continue;
                }
                _ => {}
            }
            self.pending.push(c);
        }
        self.pending.push('\n');
        done
    }

    /// Whether a statement is under way (the shell's continuation prompt).
    fn continuing(&self) -> bool {
        !self.pending.trim().is_empty() || self.quote.is_some()
    }

    /// What is left at the end of the input: a last statement without its `;`.
    fn finish(&mut self) -> Option<Input> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.trim().is_empty()).then(|| Input::Statement(rest.trim().to_string()))
    }
}

/// What the shell or script is doing: its session and settings.
struct Runner {
    session: SqlSession,
    output: OutputFormat,
    timing: bool,
}

/// What a command asks of the loop.
enum Next {
    Go,
    Quit,
}

const HELP: &str = "\\d              list tables and views
\\d NAME         the columns of a table or view
\\o FORMAT       print results as table, json or csv
\\timing [on|off] print each result's row count and time
\\q              quit
\\?              this help
Statements end with ';' and may span lines.";

impl Runner {
    fn statement(&mut self, sql: &str) -> Result<()> {
        let started = Instant::now();
        let batches = self.session.query(sql)?;
        let took = started.elapsed();
        println!("{}", format_batches(self.output, &batches)?.trim_end());
        if let Some(warning) = self.session.warning() {
            eprintln!("{warning}");
        }
        if self.timing {
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            eprintln!("({rows} row{}, {:.1} ms)", if rows == 1 { "" } else { "s" }, took.as_secs_f64() * 1e3);
        }
        Ok(())
    }

    fn command(&mut self, command: &str) -> Result<Next> {
        let mut words = command.split_whitespace();
        match (words.next().unwrap_or_default(), words.next()) {
            ("\\q", _) => return Ok(Next::Quit),
            ("\\?", _) => println!("{HELP}"),
            ("\\d", None) => self.statement(
                "SELECT table_schema, table_name, table_type FROM information_schema.tables \
                 WHERE table_schema <> 'information_schema' ORDER BY table_schema, table_name",
            )?,
            ("\\d", Some(name)) => {
                let name = name.replace('\'', "''");
                self.statement(&format!(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                     WHERE table_name = '{name}' ORDER BY ordinal_position"
                ))?
            }
            ("\\o", Some(format)) => {
                self.output = <OutputFormat as clap::ValueEnum>::from_str(format, true)
                    .map_err(|_| anyhow::anyhow!("\\o {format}: give table, json or csv"))?;
            }
            ("\\timing", setting) => {
                self.timing = match setting {
                    None => !self.timing,
                    Some("on") => true,
                    Some("off") => false,
                    Some(other) => anyhow::bail!("\\timing {other}: give on or off"),
                };
                eprintln!("timing is {}", if self.timing { "on" } else { "off" });
            }
            _ => anyhow::bail!("{command}: unknown command (\\? lists them)"),
        }
        Ok(Next::Go)
    }

    fn input(&mut self, input: Input) -> Result<Next> {
        match input {
            Input::Statement(sql) => self.statement(&sql).map(|()| Next::Go),
            Input::Command(command) => self.command(&command),
        }
    }

    /// Runs a script to its end; stops at the first error.
    fn script(&mut self, lines: impl Iterator<Item = std::io::Result<String>>) -> Result<()> {
        let mut splitter = Splitter::default();
        for (i, line) in lines.enumerate() {
            for input in splitter.line(&line?) {
                if let Next::Quit = self.input(input).with_context(|| format!("at line {}", i + 1))? {
                    return Ok(());
                }
            }
        }
        if let Some(input) = splitter.finish() {
            self.input(input).context("at the end")?;
        }
        Ok(())
    }

    /// The interactive shell: reads until `\q` or end of input; errors are printed, not fatal.
    fn shell(&mut self) -> Result<()> {
        let mut editor = rustyline::DefaultEditor::new()?;
        let history = history_file();
        if let Some(file) = &history {
            let _ = editor.load_history(file); // none yet on a first run
        }
        eprintln!("tessera sql: statements end with ';', \\? for help, \\q to quit");
        let mut splitter = Splitter::default();
        loop {
            let prompt = if splitter.continuing() { "     -> " } else { "tessera> " };
            let line = match editor.readline(prompt) {
                Ok(line) => line,
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    splitter = Splitter::default(); // Ctrl-C drops the statement under way
                    continue;
                }
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            if !line.trim().is_empty() {
                let _ = editor.add_history_entry(line.as_str());
            }
            let inputs = splitter.line(&line);
            for input in inputs {
                match self.input(input) {
                    Ok(Next::Quit) => return save_history(&mut editor, history.as_deref()),
                    Ok(Next::Go) => {}
                    Err(e) => eprintln!("error: {}", tessera_core::error_chain(e.as_ref())),
                }
            }
        }
        save_history(&mut editor, history.as_deref())
    }
}

/// Where the shell keeps its history: `$XDG_STATE_HOME/tessera/sql_history`, else
/// `~/.local/state/tessera/sql_history`; none without a home.
fn history_file() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    let dir = state.join("tessera");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("sql_history"))
}

fn save_history(editor: &mut rustyline::DefaultEditor, file: Option<&std::path::Path>) -> Result<()> {
    if let Some(file) = file {
        editor.save_history(file).with_context(|| format!("saving the history to {}", file.display()))?;
    }
    Ok(())
}

/// Runs what the arguments say: the statement(s), the file, or stdin (shell or script).
pub fn run(args: &SqlArgs) -> Result<()> {
    let session = SqlSession::connect(&args.connection)?;
    let mut runner = Runner { session, output: args.output.output, timing: args.timing };
    match (&args.query, &args.file) {
        (Some(sql), _) => runner.script(sql.lines().map(|l| Ok(l.to_string()))),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            runner.script(text.lines().map(|l| Ok(l.to_string()))).with_context(|| file.display().to_string())
        }
        (None, None) if std::io::stdin().is_terminal() => runner.shell(),
        (None, None) => runner.script(std::io::stdin().lock().lines()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<Input> {
        let mut s = Splitter::default();
        let mut out: Vec<Input> = text.lines().flat_map(|l| s.line(l)).collect();
        out.extend(s.finish());
        out
    }

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments_and_commands_stand_alone() {
        assert_eq!(
            split("SELECT 1;\nSELECT 'a;b',\n  \"x;y\" -- a comment; still one\nFROM t;\n\\d alerts\nSELECT 2"),
            [
                Input::Statement("SELECT 1".into()),
                Input::Statement("SELECT 'a;b',\n  \"x;y\" \nFROM t".into()),
                Input::Command("\\d alerts".into()),
                Input::Statement("SELECT 2".into()),
            ]
        );
        assert_eq!(
            split("SELECT 1; SELECT 2;"),
            [Input::Statement("SELECT 1".into()), Input::Statement("SELECT 2".into())]
        );
        let mut s = Splitter::default();
        assert!(s.line("SELECT 'it''s").is_empty());
        assert!(s.continuing(), "inside a quote");
        assert_eq!(s.line("';"), [Input::Statement("SELECT 'it''s\n'".into())]);
        assert!(!s.continuing());
    }
}
