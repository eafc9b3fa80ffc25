//! The stream stage's errors.
//!
//! Where a library reported the failure (sqlparser, DataFusion, Arrow, postcard, the window
//! spec's validation), its error is kept as the [`std::error::Error::source`]; a variant holding
//! a `String` is a message of this crate's own, with no underlying error behind it.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use tessera_core::WindowError;

/// Why a query could not be registered, a batch could not be processed, or a checkpoint could
/// not be taken or restored.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The statement does not follow the continuous-query grammar; the message says how.
    #[error("continuous query: {0}")]
    Grammar(String),
    /// sqlparser could not read the statement.
    #[error("continuous query: {}{source}", .context.as_ref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Parse {
        /// The part being read (`query name`, `WITH`, the query's name for its `SELECT`), if
        /// the statement got that far.
        context: Option<String>,
        /// sqlparser's error.
        #[source]
        source: ParserError,
    },
    /// The window function's durations are unusable.
    #[error("continuous query: {query}: {source}")]
    Window {
        /// The query's name.
        query: String,
        /// What is wrong with them.
        #[source]
        source: WindowError,
    },
    /// DataFusion rejected the query at registration.
    #[error("continuous query {query}: {}", .source.strip_backtrace())]
    Sql {
        /// The query's name.
        query: String,
        /// DataFusion's error.
        #[source]
        source: DataFusionError,
    },
    /// The query plans, but its output lacks what the engine reads from it (a text
    /// `motor_id`, the window's `window_start`, a numeric `score` when it raises alerts).
    #[error("continuous query {query}: {message}")]
    Output {
        /// The query's name.
        query: String,
        /// What is missing or of the wrong type.
        message: String,
    },
    /// A query with this name is already registered.
    #[error("a continuous query named {0} is already registered")]
    Duplicate(String),
    /// No continuous query has this name.
    #[error("no continuous query named {0} is registered")]
    Unknown(String),
    /// A batch or a query output has the wrong columns; the message says which.
    #[error("schema: {0}")]
    Schema(String),
    /// Running a registered query failed.
    #[error("running continuous query {query}: {source}")]
    Run {
        /// The query's name.
        query: String,
        /// DataFusion's error.
        source: DataFusionError,
    },
    /// An ad-hoc query over the engine's tables failed.
    #[error("{0}")]
    Query(#[source] DataFusionError),
    /// An Arrow kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A checkpoint cannot be taken now, or does not fit what it is restored into; the
    /// message says why.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The spill file of cold motors ([`crate::cold`]) failed.
    #[error("cold motors' spill file: {action}: {source}")]
    Spill {
        /// What was being done: `writing a motor`, `reading a motor`, ...
        action: &'static str,
        /// The file system's error, or why a motor's bytes did not open.
        #[source]
        source: std::io::Error,
    },
    /// Checkpoint state could not be encoded or decoded.
    #[error("checkpoint: {action}: {source}")]
    CheckpointCodec {
        /// What was being done: `encoding state`, `decoding state`, `decoding the state's
        /// version`.
        action: &'static str,
        /// postcard's error.
        #[source]
        source: postcard::Error,
    },
}
